// The KD teacher's evaluation forward with and without BN folded into its convs (nn/fold.h), on
// the CPU (and on cuda:0 when one is present): resnet32x4 on CIFAR-100-shaped batches; and one
// folded residual unit on the CPU, conv2d_fused against conv2d, add and relu.
#include <benchmark/benchmark.h>

#include <memory>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "nn/fold.h"
#include "nn/models/registry.h"

namespace {

using namespace retort;

void teacher_forward(benchmark::State& state, bool fold, Device device) {
  if (device.is_cuda() && cuda_device_count() == 0) {
    state.SkipWithError("no CUDA GPU is present");
    return;
  }
  set_num_threads(2);
  const int64_t batch = state.range(0);
  std::shared_ptr<nn::Module> model = nn::create_model("resnet32x4", {3, 100, 0});
  model->to(device);
  model->eval();
  nn::BatchNormFold folded;
  if (fold) folded = nn::BatchNormFold(model);
  Generator gen(1);
  const Tensor x = Tensor::randn({batch, 3, 32, 32}, gen, 0.0, 1.0, DType::f32, device);
  NoGradGuard no_grad;
  (void)(*model)(x);  // folds, chooses algorithms
  synchronize(device);
  for (auto _ : state) {
    Tensor y = (*model)(x);
    synchronize(device);
    benchmark::DoNotOptimize(y);
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

// A folded block's last unit at resnet32x4's stage shapes (channels, size), batch 16: the bias,
// the shortcut and the ReLU in the conv's epilogue (fused) or as the separate ops.
void residual_unit(benchmark::State& state, bool fused) {
  set_num_threads(2);
  const int64_t channels = state.range(0), size = state.range(1), batch = 16;
  Generator gen(2);
  const Tensor x = Tensor::randn({batch, channels, size, size}, gen);               // (N, C, H, W)
  const Tensor weight = Tensor::randn({channels, channels, 3, 3}, gen, 0.0, 0.05);  // (C, C, 3, 3)
  const Tensor bias = Tensor::randn({channels}, gen);                               // (C)
  const Tensor shortcut = Tensor::randn({batch, channels, size, size}, gen);        // (N, C, H, W)
  const Conv2dOptions options = Conv2dOptions::make(1, 1);
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor y = fused ? conv2d_fused(x, weight, bias, shortcut, Activation::relu, options)
                     : relu(add(conv2d(x, weight, bias, options), shortcut));
    benchmark::DoNotOptimize(y.data<float>());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

void BM_ResidualUnitSeparateOps(benchmark::State& s) {
  residual_unit(s, false);
}
void BM_ResidualUnitFused(benchmark::State& s) {
  residual_unit(s, true);
}

void BM_TeacherForwardCpu(benchmark::State& s) {
  teacher_forward(s, false, Device::cpu());
}
void BM_TeacherForwardCpuFolded(benchmark::State& s) {
  teacher_forward(s, true, Device::cpu());
}
void BM_TeacherForwardCuda(benchmark::State& s) {
  teacher_forward(s, false, Device::cuda());
}
void BM_TeacherForwardCudaFolded(benchmark::State& s) {
  teacher_forward(s, true, Device::cuda());
}

#define RETORT_RESNET32X4_STAGES Args({64, 32})->Args({128, 16})->Args({256, 8})
BENCHMARK(BM_ResidualUnitSeparateOps)->RETORT_RESNET32X4_STAGES->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ResidualUnitFused)->RETORT_RESNET32X4_STAGES->Unit(benchmark::kMillisecond);
#undef RETORT_RESNET32X4_STAGES
BENCHMARK(BM_TeacherForwardCpu)->Arg(16)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TeacherForwardCpuFolded)->Arg(16)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TeacherForwardCuda)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TeacherForwardCudaFolded)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
