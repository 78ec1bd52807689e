// CPU conv2d (forward, backward data, backward filter) and GEMM timings at the resnet56 and
// resnet8x4 shapes, batch 64, CpuContext{2}; row names match bench/torch_cpu_reference.py.
#include <benchmark/benchmark.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"

namespace {

using retort::kernels::Conv2dShape;
using retort::kernels::CpuContext;

constexpr int64_t kBatch = 64;
constexpr int kThreads = 2;
constexpr CpuContext kContext{kThreads};
// GEMMs issued inside an OpenMP team of kThreads run serially, as kernels/cpu/conv.cpp does.
constexpr CpuContext kSerial{1};
// Distinct random input buffers rotated through, so no iteration re-reads the previous one's data.
constexpr int kPool = 8;
constexpr double kWarmUpSeconds = 0.25;
constexpr int64_t kClasses = 100;

// One convolution of a CIFAR ResNet on a 32x32x3 input: square input of `size`, padding k / 2.
struct ConvCase {
  const char* model;
  int64_t in_channels, size, out_channels, kernel, stride;
};

// Every distinct conv shape of resnet56 ([16, 16, 32, 64]) and resnet8x4 ([32, 64, 128, 256]).
constexpr ConvCase kConvCases[] = {
    {"resnet56", 3, 32, 16, 3, 1},      // stem
    {"resnet56", 16, 32, 16, 3, 1},     // layer1 convs
    {"resnet56", 16, 32, 32, 3, 2},     // layer2.0.conv1
    {"resnet56", 32, 16, 32, 3, 1},     // layer2 convs
    {"resnet56", 16, 32, 32, 1, 2},     // layer2.0 shortcut
    {"resnet56", 32, 16, 64, 3, 2},     // layer3.0.conv1
    {"resnet56", 64, 8, 64, 3, 1},      // layer3 convs
    {"resnet56", 32, 16, 64, 1, 2},     // layer3.0 shortcut
    {"resnet8x4", 3, 32, 32, 3, 1},     // stem
    {"resnet8x4", 32, 32, 64, 3, 1},    // layer1.0.conv1
    {"resnet8x4", 64, 32, 64, 3, 1},    // layer1.0.conv2
    {"resnet8x4", 32, 32, 64, 1, 1},    // layer1.0 shortcut (stride 1 projection)
    {"resnet8x4", 64, 32, 128, 3, 2},   // layer2.0.conv1
    {"resnet8x4", 128, 16, 128, 3, 1},  // layer2.0.conv2
    {"resnet8x4", 64, 32, 128, 1, 2},   // layer2.0 shortcut
    {"resnet8x4", 128, 16, 256, 3, 2},  // layer3.0.conv1
    {"resnet8x4", 256, 8, 256, 3, 1},   // layer3.0.conv2
    {"resnet8x4", 128, 16, 256, 1, 2},  // layer3.0 shortcut
};
constexpr size_t kConvCaseCount = sizeof(kConvCases) / sizeof(kConvCases[0]);

// The classifier Linear(features, 100) of each model at batch 64.
struct LinearCase {
  const char* model;
  int64_t features;
};
constexpr LinearCase kLinearCases[] = {{"resnet56", 64}, {"resnet8x4", 256}};

Conv2dShape conv_shape(const ConvCase& c) {
  Conv2dShape s;
  s.batch = kBatch;
  s.in_channels = c.in_channels;
  s.in_h = s.in_w = c.size;
  s.out_channels = c.out_channels;
  s.kernel_h = s.kernel_w = c.kernel;
  s.stride_h = s.stride_w = c.stride;
  s.pad_h = s.pad_w = c.kernel / 2;
  return s;
}

int64_t conv_macs(const Conv2dShape& s) {
  return s.batch * s.out_channels * s.out_h() * s.out_w() * (s.in_channels / s.groups) *
         s.kernel_h * s.kernel_w;
}

// Concatenates the streamed form of each part (GCC 12 warns falsely, -Wrestrict, on chains of
// "literal" + std::string).
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

// "s1_16x32x32_k3_o16": stride, input (C x H x W), kernel size, output channels.
std::string conv_label(const ConvCase& c) {
  return concat("s", c.stride, "_", c.in_channels, "x", c.size, "x", c.size, "_k", c.kernel, "_o",
                c.out_channels);
}

// kPool buffers of `elems` floats, uniform in [-1, 1): never zeros, distinct per buffer.
std::vector<std::vector<float>> random_pool(size_t elems, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<std::vector<float>> pool(kPool, std::vector<float>(elems));
  for (auto& buffer : pool) {
    for (float& v : buffer) v = uniform(rng);
  }
  return pool;
}

// Inputs and outputs of one conv case, shared by its three directions. Filling hundreds of MiB
// with random numbers takes longer than a measurement, so the last case's buffers are kept.
struct ConvBuffers {
  std::vector<std::vector<float>> x;       // kPool x (N, C_in, H, W)
  std::vector<std::vector<float>> w;       // kPool x (C_out, C_in, k, k)
  std::vector<std::vector<float>> grad_y;  // kPool x (N, C_out, H_out, W_out)
  std::vector<float> y;                    // (N, C_out, H_out, W_out)
  std::vector<float> grad_x;               // (N, C_in, H, W)
  std::vector<float> grad_w;               // (C_out, C_in, k, k)
};

ConvBuffers& conv_buffers(size_t index) {
  static size_t cached_index = kConvCaseCount;
  static std::unique_ptr<ConvBuffers> cached;
  if (cached_index != index || !cached) {
    cached.reset();  // free the previous case before allocating the next
    const Conv2dShape s = conv_shape(kConvCases[index]);
    const auto x_elems = static_cast<size_t>(s.batch * s.in_channels * s.in_h * s.in_w);
    const auto w_elems =
        static_cast<size_t>(s.out_channels * s.in_channels * s.kernel_h * s.kernel_w);
    const auto y_elems = static_cast<size_t>(s.batch * s.out_channels * s.out_h() * s.out_w());
    cached = std::make_unique<ConvBuffers>();
    cached->x = random_pool(x_elems, 1);
    cached->w = random_pool(w_elems, 2);
    cached->grad_y = random_pool(y_elems, 3);
    cached->y.assign(y_elems, 0.0f);
    cached->grad_x.assign(x_elems, 0.0f);
    cached->grad_w.assign(w_elems, 0.0f);
    cached_index = index;
  }
  return *cached;
}

// items_per_second counts images (batch rows); the "GFLOP" counter is a rate, printed as GFLOP
// per second ("90.5/s"), counting 2 FLOPs per multiply-add. Both are over wall-clock time (every
// benchmark here uses UseRealTime()).
void report(benchmark::State& state, int64_t macs_per_iteration) {
  const auto iterations = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["GFLOP"] =
      benchmark::Counter(2.0 * static_cast<double>(macs_per_iteration) * iterations * 1e-9,
                         benchmark::Counter::kIsRate);
  state.SetLabel("threads=2");
}

// Runs body(slot) once per iteration with slot rotating over the kPool buffers; a kernel that
// throws (not implemented yet, bad shape) turns into a skipped row rather than a crash.
template <typename Body>
void run_rotating(benchmark::State& state, Body&& body) {
  int slot = 0;
  try {
    for (auto _ : state) {
      body(slot);
      benchmark::ClobberMemory();
      slot = (slot + 1) % kPool;
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

enum class ConvDirection { forward, backward_data, backward_filter };

void bm_conv(benchmark::State& state, size_t index, ConvDirection direction) {
  const Conv2dShape s = conv_shape(kConvCases[index]);
  ConvBuffers& b = conv_buffers(index);
  run_rotating(state, [&](int slot) {
    switch (direction) {
      case ConvDirection::forward:
        retort::kernels::conv2d_forward(kContext, s, b.x[slot].data(), b.w[slot].data(),
                                        b.y.data());
        benchmark::DoNotOptimize(b.y.data());
        break;
      case ConvDirection::backward_data:
        retort::kernels::conv2d_backward_data(kContext, s, b.grad_y[slot].data(), b.w[slot].data(),
                                              b.grad_x.data());
        benchmark::DoNotOptimize(b.grad_x.data());
        break;
      case ConvDirection::backward_filter:
        retort::kernels::conv2d_backward_filter(kContext, s, b.x[slot].data(),
                                                b.grad_y[slot].data(), b.grad_w.data());
        benchmark::DoNotOptimize(b.grad_w.data());
        break;
    }
  });
  report(state, conv_macs(s));
}

// The classifier as three GEMMs, on CpuContext{2}: y = x w^T, grad_x = grad_y w, grad_w =
// grad_y^T x. x (64, features), w (100, features), y and grad_y (64, 100).
enum class LinearDirection { forward, backward_data, backward_filter };

void bm_linear(benchmark::State& state, int64_t features, LinearDirection direction) {
  const auto pool_x = random_pool(static_cast<size_t>(kBatch * features), 4);
  const auto pool_w = random_pool(static_cast<size_t>(kClasses * features), 5);
  const auto pool_gy = random_pool(static_cast<size_t>(kBatch * kClasses), 6);
  std::vector<float> out(static_cast<size_t>(kClasses * features));  // largest of the outputs
  run_rotating(state, [&](int slot) {
    const float* x = pool_x[slot].data();
    const float* w = pool_w[slot].data();
    const float* gy = pool_gy[slot].data();
    switch (direction) {
      case LinearDirection::forward:
        retort::kernels::gemm(kContext, false, true, kBatch, kClasses, features, 1.0f, x, features,
                              w, features, 0.0f, out.data(), kClasses);
        break;
      case LinearDirection::backward_data:
        retort::kernels::gemm(kContext, false, false, kBatch, features, kClasses, 1.0f, gy,
                              kClasses, w, features, 0.0f, out.data(), features);
        break;
      case LinearDirection::backward_filter:
        retort::kernels::gemm(kContext, true, false, kClasses, features, kBatch, 1.0f, gy, kClasses,
                              x, features, 0.0f, out.data(), features);
        break;
    }
    benchmark::DoNotOptimize(out.data());
  });
  report(state, kBatch * kClasses * features);
}

// The GEMMs an im2col convolution issues when each sample's whole output plane is one GEMM
// (k = C_in * kh * kw rows of columns, p = H_out * W_out): samples split over kThreads OpenMP
// threads, each GEMM serial, as conv.cpp runs them. No im2col/col2im here: this is the GEMM-only
// floor of the same FLOPs.
//   forward:         y_n (o, p)  = w (o, k) * col_n (k, p)
//   backward data:   gcol (k, p) = w^T (k, o) * grad_y_n (o, p)        (per-thread gcol)
//   backward filter: gw_t (o, k) += grad_y_n (o, p) * col_n^T (p, k)   (per-thread partials)
void bm_im2col_gemm(benchmark::State& state, size_t index, ConvDirection direction) {
  const Conv2dShape s = conv_shape(kConvCases[index]);
  const int64_t o = s.out_channels, k = s.in_channels * s.kernel_h * s.kernel_w;
  const int64_t p = s.out_h() * s.out_w();
  // Per-sample pools: sample n of iteration i reads slot (n + i) % kPool.
  const auto pool_col = random_pool(static_cast<size_t>(k * p), 7);
  const auto pool_w = random_pool(static_cast<size_t>(o * k), 8);
  const auto pool_gy = random_pool(static_cast<size_t>(o * p), 9);
  std::vector<float> y(static_cast<size_t>(kBatch * o * p));           // (N, o, p)
  std::vector<float> grad_col(static_cast<size_t>(kThreads * k * p));  // (threads, k, p)
  std::vector<float> partials(static_cast<size_t>(kThreads * o * k));  // (threads, o, k)
  std::vector<float> grad_w(static_cast<size_t>(o * k));               // (o, k)
  run_rotating(state, [&](int slot) {
    const float* w = pool_w[slot].data();
    if (direction == ConvDirection::backward_filter) {
      std::fill(partials.begin(), partials.end(), 0.0f);
    }
#pragma omp parallel num_threads(kThreads)
    {
      const int64_t thread = omp_get_thread_num();
#pragma omp for schedule(static)
      for (int64_t n = 0; n < kBatch; ++n) {
        const size_t sample_slot = static_cast<size_t>((n + slot) % kPool);
        const float* col = pool_col[sample_slot].data();
        const float* gy = pool_gy[sample_slot].data();
        switch (direction) {
          case ConvDirection::forward:
            retort::kernels::gemm(kSerial, false, false, o, p, k, 1.0f, w, k, col, p, 0.0f,
                                  y.data() + n * o * p, p);
            break;
          case ConvDirection::backward_data:
            retort::kernels::gemm(kSerial, true, false, k, p, o, 1.0f, w, k, gy, p, 0.0f,
                                  grad_col.data() + thread * k * p, p);
            break;
          case ConvDirection::backward_filter:
            retort::kernels::gemm(kSerial, false, true, o, k, p, 1.0f, gy, p, col, p, 1.0f,
                                  partials.data() + thread * o * k, k);
            break;
        }
      }
    }
    if (direction == ConvDirection::backward_filter) {
      for (int64_t e = 0; e < o * k; ++e) {
        float sum = partials[e];
        for (int t = 1; t < kThreads; ++t) sum += partials[t * o * k + e];
        grad_w[e] = sum;
      }
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(grad_col.data());
    benchmark::DoNotOptimize(grad_w.data());
  });
  report(state, conv_macs(s));
}

// Every row is timed on the wall clock (the kernels run on an OpenMP team), after a warm-up.
benchmark::internal::Benchmark* configure(benchmark::internal::Benchmark* b,
                                          benchmark::TimeUnit unit) {
  return b->Unit(unit)->UseRealTime()->MinWarmUpTime(kWarmUpSeconds);
}

// Google Benchmark appends "/min_warmup_time:0.250/real_time" to each row's name; these reporters
// drop it so a row reads "conv_fwd/resnet56/s1_16x32x32_k3_o16", the name
// bench/torch_cpu_reference.py prints for the same shape.
std::vector<benchmark::BenchmarkReporter::Run> plain_names(
    const std::vector<benchmark::BenchmarkReporter::Run>& runs) {
  std::vector<benchmark::BenchmarkReporter::Run> plain = runs;
  for (auto& run : plain) {
    run.run_name.min_warmup_time.clear();
    run.run_name.time_type.clear();
  }
  return plain;
}

class PlainConsoleReporter : public benchmark::ConsoleReporter {
 public:
  PlainConsoleReporter(OutputOptions options, size_t name_width)
      : benchmark::ConsoleReporter(options), name_width_(name_width) {}
  bool ReportContext(const Context& context) override {
    Context plain = context;
    plain.name_field_width = name_width_;
    return benchmark::ConsoleReporter::ReportContext(plain);
  }
  void ReportRuns(const std::vector<Run>& runs) override {
    benchmark::ConsoleReporter::ReportRuns(plain_names(runs));
  }

 private:
  size_t name_width_;
};

class PlainJsonReporter : public benchmark::JSONReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    benchmark::JSONReporter::ReportRuns(plain_names(runs));
  }
};

// Registers every row; returns the length of the longest name.
size_t register_benchmarks() {
  size_t longest = 0;
  auto add = [&longest](const std::string& name, auto body, benchmark::TimeUnit unit) {
    longest = std::max(longest, name.size());
    configure(benchmark::RegisterBenchmark(name.c_str(), body), unit);
  };
  const std::pair<ConvDirection, const char*> directions[] = {
      {ConvDirection::forward, "fwd"},
      {ConvDirection::backward_data, "bwd_data"},
      {ConvDirection::backward_filter, "bwd_filter"}};
  for (size_t i = 0; i < kConvCaseCount; ++i) {
    const std::string suffix = concat("/", kConvCases[i].model, "/", conv_label(kConvCases[i]));
    for (const auto& [direction, tag] : directions) {
      add(
          concat("conv_", tag, suffix),
          [i, direction = direction](benchmark::State& st) { bm_conv(st, i, direction); },
          benchmark::kMillisecond);
    }
  }
  const std::pair<LinearDirection, const char*> linear_directions[] = {
      {LinearDirection::forward, "linear_fwd"},
      {LinearDirection::backward_data, "linear_bwd_data"},
      {LinearDirection::backward_filter, "linear_bwd_filter"}};
  for (const LinearCase& c : kLinearCases) {
    const std::string suffix = concat("/", c.model, "/", kBatch, "x", c.features, "_o", kClasses);
    for (const auto& [direction, tag] : linear_directions) {
      add(
          concat("gemm/", tag, suffix),
          [features = c.features, direction = direction](benchmark::State& st) {
            bm_linear(st, features, direction);
          },
          benchmark::kMicrosecond);
    }
  }
  for (size_t i = 0; i < kConvCaseCount; ++i) {
    if (kConvCases[i].kernel != 3) continue;
    const std::string suffix = concat("/", kConvCases[i].model, "/", conv_label(kConvCases[i]));
    for (const auto& [direction, tag] : directions) {
      add(
          concat("gemm/im2col_", tag, suffix),
          [i, direction = direction](benchmark::State& st) { bm_im2col_gemm(st, i, direction); },
          benchmark::kMillisecond);
    }
  }
  return longest;
}

}  // namespace

int main(int argc, char** argv) {
  // Read before Initialize() consumes the flags; CSV falls back to the library's own reporter.
  std::string format = "console";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--benchmark_format=", 0) == 0) format = arg.substr(19);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("retort_cpu_threads", std::to_string(kThreads));
  benchmark::AddCustomContext("batch", std::to_string(kBatch));
  const size_t name_width = register_benchmarks();
  std::unique_ptr<benchmark::BenchmarkReporter> reporter;
  if (format == "json") {
    reporter = std::make_unique<PlainJsonReporter>();
  } else if (format == "console") {
    const bool color = isatty(fileno(stdout)) != 0;
    reporter =
        std::make_unique<PlainConsoleReporter>(color ? benchmark::ConsoleReporter::OO_ColorTabular
                                                     : benchmark::ConsoleReporter::OO_Tabular,
                                               name_width);
  }
  benchmark::RunSpecifiedBenchmarks(reporter.get());
  benchmark::Shutdown();
  return 0;
}
