// CPU-vs-CUDA parity of every engine op through the public API (forward, backward, in-place
// updates) over a sweep of shapes, and the meta-test that fails on a CUDA op without a case here.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/augment.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "tests/cuda_test.h"
#include "tests/engine/cuda_parity.h"
#include "tests/engine/cuda_parity_layers.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::test {
namespace {

// --- elementwise ---------------------------------------------------------------------------

using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);

// Broadcasting over equal shapes, a (C, 1, 1) operand, 0-d scalars on either side, both sides
// broadcast, a lower-rank operand, then a transposed (strided) operand and one leaf used twice
// (both gradients accumulate into it). b_low keeps div's denominators away from zero.
void binary_sweep(const std::string& name, BinaryFn op, double b_low, double b_high) {
  struct Pair {
    Shape a, b;
  };
  const Pair pairs[] = {{{2, 3, 4}, {2, 3, 4}}, {{2, 3, 5, 7}, {3, 1, 1}}, {{4, 5}, {}},
                        {{}, {3, 2}},           {{1, 7}, {5, 1}},          {{3}, {2, 3}},
                        {{6, 1, 5}, {1}},       {{1, 1, 1}, {2, 1, 3}},    {{257}, {257}}};
  uint64_t seed = 100;
  for (const Pair& p : pairs) {
    expect_parity(cat(name, " ", shape_str(p.a), " with ", shape_str(p.b)),
                  [op](const auto& in) { return op(in[0], in[1]); },
                  {uniform(p.a, seed, -1.0, 1.0), uniform(p.b, seed + 1, b_low, b_high)});
    seed += 2;
  }
  expect_parity(cat(name, " of a transposed operand"),
                [op](const auto& in) { return op(in[0].transpose(0, 1), in[1]); },
                {uniform({5, 3}, 150), uniform({3, 5}, 151, b_low, b_high)});
  expect_parity(cat(name, " of one leaf with itself"),
                [op](const auto& in) { return op(in[0], in[0]); },
                {uniform({4, 7}, 152, b_low, b_high)});
}

using UnaryFn = Tensor (*)(const Tensor&);

void unary_sweep(const std::string& name, UnaryFn op, double low, double high) {
  const Shape shapes[] = {{7}, {3, 5, 7}, {1, 1}, {2, 3, 4, 5}, {}};
  uint64_t seed = 200;
  for (const Shape& s : shapes) {
    expect_parity(cat(name, " ", shape_str(s)), [op](const auto& in) { return op(in[0]); },
                  {uniform(s, seed++, low, high)});
  }
  expect_parity(cat(name, " of a transposed input"),
                [op](const auto& in) { return op(in[0].transpose(0, 1)); },
                {uniform({6, 5}, seed, low, high)});
}

void affine_sweep() {
  struct Map {
    double alpha, beta;
  };
  const Map maps[] = {{2.5, -3.0}, {-1.0, 0.5}, {0.0, 1.0}, {1.0 / 3.0, 0.0}};
  for (const Map& m : maps) {
    expect_parity(cat("affine ", m.alpha, " x + ", m.beta),
                  [m](const auto& in) { return affine(in[0], m.alpha, m.beta); },
                  {uniform({3, 5, 7}, 300)});
  }
  expect_parity("scalar operators", [](const auto& in) { return (3.0 - in[0] * 2.5) / 4.0 + 1.0; },
                {uniform({9}, 301)});
  expect_parity("affine of a transposed input",
                [](const auto& in) { return affine(in[0].transpose(0, 1), -2.0, 0.25); },
                {uniform({4, 6}, 302)});
}

// --- reductions and products -----------------------------------------------------------------

void reduce_sweep(bool is_mean) {
  const std::string name = is_mean ? "mean" : "sum";
  auto op = is_mean ? &mean : &sum;
  struct Dims {
    std::vector<int64_t> dims;
    bool keepdim;
  };
  const Dims cases[] = {{{}, false},     {{}, true},   {{1}, false},    {{1}, true},
                        {{0, 2}, false}, {{-1}, true}, {{1, 3}, false}, {{0, 1, 2, 3}, true}};
  for (const Dims& c : cases) {
    std::ostringstream dims;
    for (int64_t d : c.dims) dims << d << " ";
    expect_parity(cat(name, " over [ ", dims.str(), "] keepdim ", c.keepdim),
                  [op, c](const auto& in) { return op(in[0], c.dims, c.keepdim); },
                  {uniform({2, 3, 5, 7}, 400)});
  }
  expect_parity(cat(name, " of a long odd row"),
                [op](const auto& in) { return op(in[0], {1}, false); }, {uniform({3, 1031}, 401)});
  expect_parity(cat(name, " of a transposed input"),
                [op](const auto& in) { return op(in[0].transpose(1, 2), {2}, false); },
                {uniform({2, 5, 3}, 402)});
}

void matmul_sweep() {
  struct Mnk {
    int64_t m, n, k;
  };
  const Mnk sizes[] = {{1, 1, 1}, {3, 5, 4}, {1, 3, 7}, {17, 9, 33}, {64, 31, 48}};
  for (const Mnk& s : sizes) {
    expect_parity(cat("matmul ", s.m, "x", s.k, " by ", s.k, "x", s.n),
                  [](const auto& in) { return matmul(in[0], in[1]); },
                  {uniform({s.m, s.k}, 500), uniform({s.k, s.n}, 501)});
  }
  expect_parity("matmul of transposed operands",
                [](const auto& in) { return matmul(in[0].transpose(0, 1), in[1].transpose(0, 1)); },
                {uniform({7, 5}, 502), uniform({3, 7}, 503)});
  expect_parity("matmul, only b needs a gradient",
                [](const auto& in) { return matmul(in[0], in[1]); },
                {constant({6, 4}, 504), uniform({4, 5}, 505)});
}

void linear_sweep() {
  struct Case {
    int64_t batch, in, out;
    bool bias, x_grad;
  };
  const Case cases[] = {{5, 7, 3, true, true},
                        {5, 7, 3, false, true},
                        {1, 16, 10, true, true},
                        {33, 20, 17, true, true},
                        {4, 9, 6, true, false}};
  for (const Case& c : cases) {
    const std::string what = cat("linear batch ", c.batch, ", ", c.in, " -> ", c.out,
                                 c.bias ? ", bias" : ", no bias", c.x_grad ? "" : ", x constant");
    const Tensor x = uniform({c.batch, c.in}, 600, -1.0, 1.0, c.x_grad),
                 w = uniform({c.out, c.in}, 601);
    const std::vector<Tensor> inputs =
        c.bias ? std::vector<Tensor>{x, w, uniform({c.out}, 602)} : std::vector<Tensor>{x, w};
    expect_parity(
        what, [](const auto& in) { return linear(in[0], in[1], in.size() > 2 ? in[2] : Tensor()); },
        inputs);
  }
}

// Logit batches for the softmax family: batch 1, a single class, odd and large class counts,
// temperatures below and above 1.
struct LogitCase {
  int64_t rows, classes;
  double temperature;
};
const LogitCase kLogitCases[] = {{4, 10, 1.0}, {3, 7, 4.0},    {1, 1000, 2.0},
                                 {5, 1, 1.0},  {17, 100, 0.5}, {1, 7, 2.0}};

std::string describe(const LogitCase& c) {
  return cat("(", c.rows, ", ", c.classes, ") T ", c.temperature);
}

void softmax_sweep(bool log) {
  const std::string name = log ? "log_softmax " : "softmax ";
  for (const LogitCase& c : kLogitCases) {
    const double t = c.temperature;
    expect_parity(
        cat(name, describe(c)),
        [log, t](const auto& in) { return log ? log_softmax(in[0], t) : softmax(in[0], t); },
        {uniform({c.rows, c.classes}, 1000, -3.0, 3.0)});
  }
  expect_parity(
      cat(name, "of rank 3"),
      [log](const auto& in) { return log ? log_softmax(in[0], 0.5) : softmax(in[0], 0.5); },
      {uniform({2, 3, 5}, 1001, -3.0, 3.0)});
}

void cross_entropy_sweep() {
  const std::pair<Reduction, const char*> reductions[] = {
      {Reduction::mean, "mean"}, {Reduction::sum, "sum"}, {Reduction::none, "none"}};
  for (const LogitCase& c : kLogitCases) {
    for (const auto& [r, name] : reductions) {
      expect_parity(cat("cross_entropy (", c.rows, ", ", c.classes, ") ", name),
                    [r](const auto& in) { return cross_entropy(in[0], in[1], r); },
                    {uniform({c.rows, c.classes}, 1100, -3.0, 3.0), labels_for(c.rows, c.classes)});
    }
  }
}

// The teacher's logits never require grad (kd_divergence refuses them).
void kd_sweep() {
  for (const LogitCase& c : kLogitCases) {
    const double t = c.temperature;
    const std::vector<Tensor> inputs = {uniform({c.rows, c.classes}, 1200, -5.0, 5.0),
                                        constant({c.rows, c.classes}, 1201, -5.0, 5.0)};
    expect_parity(
        cat("kd_divergence ", describe(c)),
        [t](const auto& in) { return kd_divergence(in[0], in[1], t); }, inputs);
    expect_parity(
        cat("kd_loss ", describe(c)), [t](const auto& in) { return kd_loss(in[0], in[1], t); },
        inputs);
  }
}

void softmax_entropy_sweep() {
  for (const LogitCase& c : kLogitCases) {
    const double t = c.temperature;
    expect_parity(cat("softmax_entropy ", describe(c)),
                  [t](const auto& in) { return softmax_entropy(in[0], t); },
                  {constant({c.rows, c.classes}, 1300, -4.0, 4.0)});
  }
}

// --- views and copies ------------------------------------------------------------------------

// One differentiable view (or view + copy) per entry, on a fresh leaf of `shape`.
struct ViewCase {
  const char* name;
  TensorFn f;
  Shape shape;
};

void view_sweep(const std::vector<ViewCase>& views) {
  uint64_t seed = 1400;
  for (const ViewCase& v : views) expect_parity(v.name, v.f, {uniform(v.shape, seed++)});
}

void reshape_sweep() {
  view_sweep({
      {"reshape",
       [](const auto& in) {
         return in[0].reshape({3, -1});
       },
       {2, 3, 4}},
      {"reshape of a transposed view (a device copy)",
       [](const auto& in) { return in[0].transpose(0, 2).reshape({-1}); },
       {2, 3, 5}},
      {"flatten(1)", [](const auto& in) { return in[0].flatten(1); }, {2, 3, 4, 5}},
      {"flatten()", [](const auto& in) { return in[0].flatten(); }, {3, 1, 7}},
      {"flatten(1, 2) of a narrowed view",
       [](const auto& in) { return in[0].narrow(3, 1, 3).flatten(1, 2); },
       {2, 3, 4, 5}},
  });
}

void narrow_sweep() {
  view_sweep({
      {"narrow dim 1", [](const auto& in) { return in[0].narrow(1, 1, 2); }, {3, 5, 4}},
      {"narrow last dim", [](const auto& in) { return in[0].narrow(-1, 2, 3); }, {2, 3, 7}},
      {"narrow of a narrow",
       [](const auto& in) { return in[0].narrow(0, 1, 1).narrow(2, 0, 3); },
       {3, 2, 5}},
      {"narrow of a transposed view",
       [](const auto& in) { return in[0].transpose(0, 1).narrow(0, 1, 3) * 2.0; },
       {4, 5}},
  });
}

void transpose_sweep() {
  view_sweep({
      {"transpose(0, 2)", [](const auto& in) { return in[0].transpose(0, 2); }, {2, 3, 4}},
      {"transpose(-1, -2).contiguous()",
       [](const auto& in) { return in[0].transpose(-1, -2).contiguous(); },
       {3, 5, 7}},
      {"sum of a transpose",
       [](const auto& in) { return sum(in[0].transpose(0, 1), {1}); },
       {4, 3}},
  });
}

// contiguous / clone with autograd, then copy_ and to() between and within devices (exact).
void copy_sweep() {
  view_sweep({
      {"contiguous of a transposed view",
       [](const auto& in) { return in[0].transpose(0, 2).contiguous() * 2.0; },
       {2, 3, 4}},
      {"clone", [](const auto& in) { return in[0].clone(); }, {5, 3}},
      {"clone of a narrowed view",
       [](const auto& in) { return in[0].narrow(1, 1, 2).clone(); },
       {4, 5}},
  });

  const Tensor src = constant({4, 6}, 1433);
  expect_identical<float>("to(device) of a transposed view",
                          [&](Device d) { return src.transpose(0, 1).to(d); });
  guarded("to(cuda) and back", [&] {
    EXPECT_TRUE(
        identical(src.to(kGpu).to(Device::cpu()).to_vector<float>(), src.to_vector<float>()));
  });
  expect_identical<float>("copy_ from the host into a strided view", [&](Device d) {
    Tensor t = Tensor::zeros({4, 8}, DType::f32, d);
    t.narrow(1, 1, 6).copy_(src);
    return t;
  });
  guarded("copy_ from a strided device view into the host", [&] {
    Tensor host = Tensor::zeros({6, 4});
    host.copy_(src.to(kGpu).transpose(0, 1));
    EXPECT_TRUE(identical(host.to_vector<float>(), src.transpose(0, 1).to_vector<float>()));
  });
  expect_identical<float>("copy_ between strided views of one device", [&](Device d) {
    Tensor t = Tensor::zeros({8, 4}, DType::f32, d);
    t.narrow(0, 2, 3).copy_(src.to(d).narrow(1, 1, 4).narrow(0, 0, 3));
    return t;
  });
  Generator gen(1434);
  const Tensor f64 = Tensor::rand({3, 5}, gen, -1.0, 1.0, DType::f64);
  expect_identical<float>("copy_ converting f64 into f32", [&](Device d) {
    return Tensor::empty({3, 5}, DType::f32, d).copy_(f64);
  });
  expect_identical<float>("to(f32) of an i64 tensor",
                          [](Device d) { return labels_for(9, 5).to(d).to(DType::f32); });
}

// i64 tensors (labels, indices, counters) on the device: views, copies and fills move their
// 8-byte values bit for bit, values beyond 32 bits and negative ones included.
void i64_sweep() {
  std::vector<int64_t> values(24);
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t k = static_cast<int64_t>(i);
    values[i] = (k % 2 == 0 ? 1 : -1) * (k * (int64_t{1} << 33) + 5 * k + 1);
  }
  const Tensor cpu = Tensor::from_vector(values, {4, 6});
  expect_identical<int64_t>("i64 narrow + contiguous",
                            [&](Device d) { return cpu.to(d).narrow(1, 1, 3).contiguous(); });
  expect_identical<int64_t>("i64 transpose + contiguous",
                            [&](Device d) { return cpu.to(d).transpose(0, 1).contiguous(); });
  expect_identical<int64_t>("i64 clone of a narrowed view",
                            [&](Device d) { return cpu.to(d).narrow(0, 1, 2).clone(); });
  guarded("i64 narrowed view to the host", [&] {
    EXPECT_TRUE(identical(cpu.to(kGpu).narrow(1, 2, 3).to(Device::cpu()).to_vector<int64_t>(),
                          cpu.narrow(1, 2, 3).to_vector<int64_t>()));
  });
  expect_identical<int64_t>("i64 fill_", [](Device d) {
    return Tensor::empty({5, 3}, DType::i64, d).fill_(-1099511627779.0);  // -(2^40 + 3)
  });
  expect_identical<int64_t>("i64 zeros",
                            [](Device d) { return Tensor::zeros({7}, DType::i64, d); });
  expect_identical<int64_t>("i64 fill_ and copy_ of strided views", [&](Device d) {
    Tensor t = cpu.to(d);
    t.narrow(1, 2, 2).fill_(7.0);
    t.transpose(0, 1).narrow(0, 4, 2).copy_(cpu.narrow(1, 0, 2).transpose(0, 1));
    return t;
  });
}

void fill_sweep() {
  expect_identical<float>("zeros", [](Device d) { return Tensor::zeros({3, 5}, DType::f32, d); });
  expect_identical<float>("ones", [](Device d) { return Tensor::ones({7}, DType::f32, d); });
  expect_identical<float>("full", [](Device d) {
    return Tensor::full({2, 3, 5}, -3.25, DType::f32, d);
  });
  expect_identical<float>("fill_",
                          [](Device d) { return Tensor::empty({1031}, DType::f32, d).fill_(0.1); });
  expect_identical<float>("fill_ of strided views", [](Device d) {
    Tensor t = constant({5, 6}, 1500).to(d);
    t.narrow(1, 1, 3).fill_(2.5);
    t.transpose(0, 1).narrow(1, 4, 1).fill_(-1.0);
    return t;
  });
}

// Philox fills are device-independent (kernels/fill.h): uniform bits in (0, 1] are identical;
// a scaled uniform may differ by one rounding and normals by float rounding, within parity.
void random_sweep() {
  for (const Shape& s : {Shape{1}, Shape{3}, Shape{5}, Shape{4099}, Shape{3, 5, 7}}) {
    guarded(cat("Tensor::rand / randn ", shape_str(s)), [&] {
      Generator gen_cpu(0x5EED), gen_gpu(0x5EED);
      for (int draw = 0; draw < 2; ++draw) {  // the second draw starts at an advanced offset
        const Tensor unit_cpu = Tensor::rand(s, gen_cpu);
        const Tensor unit_gpu = Tensor::rand(s, gen_gpu, 0.0, 1.0, DType::f32, kGpu);
        EXPECT_TRUE(identical_to_cpu<float>(unit_gpu, unit_cpu)) << "unit uniform, draw " << draw;
        const Tensor scaled_cpu = Tensor::rand(s, gen_cpu, -2.0, 3.0);
        const Tensor scaled_gpu = Tensor::rand(s, gen_gpu, -2.0, 3.0, DType::f32, kGpu);
        EXPECT_TRUE(matches_cpu(scaled_gpu, scaled_cpu)) << "scaled uniform, draw " << draw;
        const Tensor normal_cpu = Tensor::randn(s, gen_cpu, 0.5, 2.0);
        const Tensor normal_gpu = Tensor::randn(s, gen_gpu, 0.5, 2.0, DType::f32, kGpu);
        EXPECT_TRUE(matches_cpu(normal_gpu, normal_cpu)) << "normal, draw " << draw;
      }
      EXPECT_EQ(gen_gpu.offset(), gen_cpu.offset());
    });
  }
}

// --- in-place updates ------------------------------------------------------------------------

// Three steps of each rule; first_step must ignore the buffer's previous contents (123).
void sgd_sweep() {
  struct Case {
    const char* name;
    SgdStepOptions o;
  };
  const Case cases[] = {{"plain", {0.1, 0.0, 0.0, 0.0, false}},
                        {"weight decay", {0.05, 0.0, 0.0, 5e-4, false}},
                        {"momentum", {0.1, 0.9, 0.0, 0.0, false}},
                        {"momentum, dampening, weight decay", {0.1, 0.9, 0.1, 1e-3, false}},
                        {"nesterov", {0.1, 0.9, 0.0, 5e-4, true}}};
  for (const Case& c : cases) {
    guarded(cat("sgd_step ", c.name), [&] {
      const bool momentum = c.o.momentum != 0.0;
      Tensor param_cpu = constant({3, 5, 7}, 1600);
      Tensor param_gpu = param_cpu.to(kGpu);
      Tensor buf_cpu = momentum ? Tensor::full({3, 5, 7}, 123.0) : Tensor();
      Tensor buf_gpu = momentum ? Tensor::full({3, 5, 7}, 123.0, DType::f32, kGpu) : Tensor();
      for (int step = 0; step < 3; ++step) {
        const Tensor grad_cpu = constant({3, 5, 7}, 1601 + static_cast<uint64_t>(step));
        const Tensor grad_gpu = grad_cpu.to(kGpu);
        sgd_step(param_cpu, grad_cpu, buf_cpu, c.o, step == 0);
        sgd_step(param_gpu, grad_gpu, buf_gpu, c.o, step == 0);
        EXPECT_TRUE(matches_cpu(param_gpu, param_cpu)) << "param after step " << step;
        if (momentum) {
          EXPECT_TRUE(matches_cpu(buf_gpu, buf_cpu)) << "buffer after step " << step;
        }
      }
    });
    // Many tensors per call (SGD::step's path), the rate read from a device scalar on the GPU.
    guarded(cat("sgd_step_many ", c.name), [&] {
      const bool momentum = c.o.momentum != 0.0;
      const Shape shapes[] = {{3, 5, 7}, {1}, {64}, {2, 1000}};
      std::vector<Tensor> params_cpu, params_gpu, grads_cpu, grads_gpu, bufs_cpu, bufs_gpu;
      std::vector<bool> first;
      for (size_t i = 0; i < std::size(shapes); ++i) {
        params_cpu.push_back(constant(shapes[i], 1610 + i));
        params_gpu.push_back(params_cpu.back().to(kGpu));
        grads_cpu.push_back(constant(shapes[i], 1620 + i));
        grads_gpu.push_back(grads_cpu.back().to(kGpu));
        bufs_cpu.push_back(momentum ? constant(shapes[i], 1630 + i) : Tensor());
        bufs_gpu.push_back(momentum ? bufs_cpu.back().to(kGpu) : Tensor());
        first.push_back(i % 2 == 0);
      }
      const Tensor lr_gpu = Tensor::full({1}, c.o.lr, DType::f32, kGpu);
      sgd_step_many(params_cpu, grads_cpu, bufs_cpu, first, c.o);
      sgd_step_many(params_gpu, grads_gpu, bufs_gpu, first, c.o, lr_gpu);
      for (size_t i = 0; i < std::size(shapes); ++i) {
        EXPECT_TRUE(matches_cpu(params_gpu[i], params_cpu[i])) << "param " << i;
        if (momentum) {
          EXPECT_TRUE(matches_cpu(bufs_gpu[i], bufs_cpu[i])) << "buffer " << i;
        }
      }
    });
  }
}

void accumulate_sweep() {
  for (const Shape& s : {Shape{}, Shape{7, 3}, Shape{1031}}) {
    guarded(cat("accumulate_ ", shape_str(s)), [&] {
      Tensor total_cpu = Tensor::zeros(s);
      Tensor total_gpu = Tensor::zeros(s, DType::f32, kGpu);
      for (uint64_t k = 0; k < 3; ++k) {
        const Tensor src = constant(s, 1700 + k);
        accumulate_(total_cpu, src);
        accumulate_(total_gpu, src.to(kGpu));
      }
      EXPECT_TRUE(matches_cpu(total_gpu, total_cpu));
    });
  }
  guarded("accumulate_ of a transposed source", [] {
    const Tensor src = constant({4, 6}, 1710);
    Tensor total_cpu = Tensor::ones({6, 4});
    Tensor total_gpu = Tensor::ones({6, 4}, DType::f32, kGpu);
    accumulate_(total_cpu, src.transpose(0, 1));
    accumulate_(total_gpu, src.to(kGpu).transpose(0, 1));
    EXPECT_TRUE(matches_cpu(total_gpu, total_cpu));
  });
}

// Ties go to the lowest index and NaN is never correct, on both devices; the counter accumulates.
void count_top1_sweep() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor crafted = Tensor::from_vector<float>(
      {0.1f, 0.9f,  0.3f, 0.2f,    // label 1: unique maximum -> correct
       0.5f, 0.5f,  0.1f, 0.0f,    // label 1: tied with a lower index -> wrong
       0.5f, 0.5f,  0.1f, 0.0f,    // label 0: tied with a higher index -> correct
       nan,  0.2f,  0.1f, 0.0f,    // label 0: NaN -> wrong
       -inf, -1.0f, 3.0f, 3.0f,    // label 3: tied with a lower index -> wrong
       2.0f, 2.0f,  2.0f, 2.0f,    // label 0: all equal -> correct
       -inf, -inf,  -inf, -1.0f},  // label 3: -> correct
      {7, 4});
  const Tensor crafted_labels = Tensor::from_vector<int64_t>({1, 1, 0, 0, 3, 0, 3}, {7});
  const Tensor random_logits = constant({257, 10}, 1800);
  const Tensor random_labels = labels_for(257, 10);
  guarded("count_top1_", [&] {
    Tensor correct_cpu = Tensor::zeros({1}, DType::i64);
    Tensor correct_gpu = Tensor::zeros({1}, DType::i64, kGpu);
    count_top1_(correct_cpu, crafted, crafted_labels);
    count_top1_(correct_gpu, crafted.to(kGpu), crafted_labels.to(kGpu));
    EXPECT_EQ(correct_cpu.item(), 4.0);
    EXPECT_TRUE(identical_to_cpu<int64_t>(correct_gpu, correct_cpu)) << "crafted rows";
    count_top1_(correct_cpu, random_logits, random_labels);
    count_top1_(correct_gpu, random_logits.to(kGpu), random_labels.to(kGpu));
    EXPECT_TRUE(identical_to_cpu<int64_t>(correct_gpu, correct_cpu)) << "after a random batch";
  });
}

// augment_images promises the CPU's bits on the device (engine/augment.h).
void augment_sweep() {
  struct Case {
    int64_t count, channels, height, width, batch;
    int pad;
    float flip_prob;
  };
  const Case cases[] = {{6, 3, 7, 5, 8, 2, 0.5f},
                        {4, 1, 4, 4, 3, 0, 0.0f},
                        {5, 4, 9, 6, 1, 3, 1.0f},
                        {9, 3, 32, 32, 16, 4, 0.5f}};
  std::mt19937 bytes_gen(1900);
  for (const Case& c : cases) {
    const std::string what = cat("augment_images ", c.channels, "x", c.height, "x", c.width,
                                 " batch ", c.batch, " pad ", c.pad);
    std::vector<uint8_t> bytes(static_cast<size_t>(c.count * c.channels * c.height * c.width));
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(bytes_gen() & 0xFF);
    std::vector<int64_t> index(static_cast<size_t>(c.batch));
    for (int64_t b = 0; b < c.batch; ++b) index[static_cast<size_t>(b)] = (b * 5 + 2) % c.count;
    kernels::AugmentParams params;
    params.pad = c.pad;
    params.flip_prob = c.flip_prob;
    const float mean[4] = {0.5071f, 0.4865f, 0.4409f, 0.3f};
    const float stdev[4] = {0.2673f, 0.2564f, 0.2762f, 0.7f};
    for (int k = 0; k < 4; ++k) params.mean[k] = mean[k], params.std[k] = stdev[k];
    guarded(what, [&] {
      const Tensor pixels = Tensor::from_vector(bytes, {c.count, c.channels, c.height, c.width});
      const Tensor indices = Tensor::from_vector(index, {c.batch});
      const Tensor cpu = augment_images(pixels, indices, params, 77, 12345);
      const Tensor gpu = augment_images(pixels.to(kGpu), indices.to(kGpu), params, 77, 12345);
      EXPECT_TRUE(identical_to_cpu<float>(gpu, cpu));
    });
  }
}

// --- the case table --------------------------------------------------------------------------

// One entry per parity case; `ops` names the kOpTable entries it exercises on the device.
struct ParityCase {
  std::vector<std::string> ops;
  std::function<void()> run;
};

const std::map<std::string, ParityCase>& cases() {
  static const std::map<std::string, ParityCase> table = {
      {"add", {{"add"}, [] { binary_sweep("add", &add, -1.0, 1.0); }}},
      {"sub", {{"sub"}, [] { binary_sweep("sub", &sub, -1.0, 1.0); }}},
      {"mul", {{"mul"}, [] { binary_sweep("mul", &mul, -1.0, 1.0); }}},
      {"div", {{"div"}, [] { binary_sweep("div", &retort::div, 0.5, 2.0); }}},
      {"affine", {{"affine"}, [] { affine_sweep(); }}},
      {"neg", {{"neg"}, [] { unary_sweep("neg", &neg, -1.0, 1.0); }}},
      {"exp", {{"exp"}, [] { unary_sweep("exp", &retort::exp, -2.0, 2.0); }}},
      {"log", {{"log"}, [] { unary_sweep("log", &retort::log, 0.5, 2.0); }}},
      {"relu", {{"relu"}, [] { unary_sweep("relu", &relu, -1.0, 1.0); }}},
      {"relu6", {{"relu6"}, [] { unary_sweep("relu6", &relu6, -2.0, 8.0); }}},
      {"sum", {{"sum"}, [] { reduce_sweep(false); }}},
      {"mean", {{"mean"}, [] { reduce_sweep(true); }}},
      {"matmul", {{"matmul"}, [] { matmul_sweep(); }}},
      {"linear", {{"linear"}, [] { linear_sweep(); }}},
      {"conv2d", {{"conv2d"}, [] { conv2d_sweep(); }}},
      {"conv2d_fused", {{"conv2d_fused"}, [] { conv2d_fused_sweep(); }}},
      {"batch_norm_train", {{"batch_norm"}, [] { batch_norm_sweep(true); }}},
      {"batch_norm_eval", {{"batch_norm"}, [] { batch_norm_sweep(false); }}},
      {"batch_norm_relu_train", {{"batch_norm_relu"}, [] { batch_norm_sweep(true, true); }}},
      {"batch_norm_relu_eval", {{"batch_norm_relu"}, [] { batch_norm_sweep(false, true); }}},
      {"batch_norm_add_relu_train",
       {{"batch_norm_add_relu"}, [] { batch_norm_add_relu_sweep(true); }}},
      {"batch_norm_add_relu_eval",
       {{"batch_norm_add_relu"}, [] { batch_norm_add_relu_sweep(false); }}},
      {"max_pool2d", {{"max_pool2d"}, [] { pool_sweep(true); }}},
      {"avg_pool2d", {{"avg_pool2d"}, [] { pool_sweep(false); }}},
      {"adaptive_avg_pool2d", {{"adaptive_avg_pool2d"}, [] { adaptive_pool_sweep(); }}},
      {"softmax", {{"softmax"}, [] { softmax_sweep(false); }}},
      {"log_softmax", {{"log_softmax"}, [] { softmax_sweep(true); }}},
      {"cross_entropy", {{"cross_entropy"}, [] { cross_entropy_sweep(); }}},
      {"kd_divergence", {{"kd_divergence"}, [] { kd_sweep(); }}},
      {"softmax_entropy", {{"softmax_entropy"}, [] { softmax_entropy_sweep(); }}},
      {"reshape", {{"reshape"}, [] { reshape_sweep(); }}},
      {"narrow", {{"narrow"}, [] { narrow_sweep(); }}},
      {"transpose", {{"transpose"}, [] { transpose_sweep(); }}},
      {"copy", {{"copy"}, [] { copy_sweep(); }}},
      {"i64_on_device", {{"narrow", "copy", "fill"}, [] { i64_sweep(); }}},
      {"fill", {{"fill"}, [] { fill_sweep(); }}},
      {"random", {{"random"}, [] { random_sweep(); }}},
      {"sgd_step", {{"sgd_step"}, [] { sgd_sweep(); }}},
      // accumulate_ runs the add op's accumulate kernel (as autograd's gradient accumulation does).
      {"accumulate", {{"add"}, [] { accumulate_sweep(); }}},
      {"count_top1", {{"count_top1"}, [] { count_top1_sweep(); }}},
      {"augment", {{"augment"}, [] { augment_sweep(); }}},
  };
  return table;
}

// Runs everywhere: it only compares names.
TEST(CudaOpsParity, EveryCudaOpHasAParityCase) {
  std::set<std::string> covered;
  for (const auto& [name, parity_case] : cases()) {
    covered.insert(parity_case.ops.begin(), parity_case.ops.end());
  }
  for (const OpInfo& info : kOpTable) {
    if (!info.cuda) continue;
    EXPECT_EQ(covered.count(std::string(info.name)), 1u)
        << "op '" << info.name << "' runs on CUDA (kOpTable) but has no CPU-vs-CUDA parity case "
        << "in tests/engine/cuda_ops_test.cpp";
  }
  for (const std::string& op : covered) {
    bool cuda_op = false;
    for (const OpInfo& info : kOpTable) cuda_op = cuda_op || (info.name == op && info.cuda);
    EXPECT_TRUE(cuda_op) << "a parity case names '" << op << "', which is no CUDA op of kOpTable";
  }
}

// Every parity case skips, with the reason, where no CUDA device can run it.
class CudaOpsParityCase : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (const std::string why = cuda_unavailable(); !why.empty()) GTEST_SKIP() << why;
    // The parity tolerances assume full fp32: TF32 off.
    math_.emplace(CudaMathOptions{.allow_tf32 = false, .deterministic = false});
  }
  void TearDown() override { math_.reset(); }

 private:
  std::optional<ScopedCudaMath> math_;
};

TEST_P(CudaOpsParityCase, MatchesCpu) {
  cases().at(GetParam()).run();
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& entry : cases()) names.push_back(entry.first);
  return names;
}

INSTANTIATE_TEST_SUITE_P(AllOps, CudaOpsParityCase, ::testing::ValuesIn(case_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace retort::test
