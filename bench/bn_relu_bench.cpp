// Training-mode batch norm + ReLU on the CPU, unfused (relu(batch_norm(x))) against fused
// (batch_norm_relu), and a residual block's last unit, relu(batch_norm(x) + residual) against
// batch_norm_add_relu; forward and backward through autograd, at the resnet56 BN shapes, 2
// threads.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/rng.h"

namespace {

using namespace retort;

enum class Unit { bn_then_relu, bn_relu, bn_then_add_relu, bn_add_relu };

// (64, channels, size, size): the three stages of resnet56 at batch 64.
void bn_relu_step(benchmark::State& state, Unit unit) {
  set_num_threads(2);
  const int64_t channels = state.range(0), size = state.range(1), batch = 64;
  Generator gen(7);
  Tensor x = Tensor::randn({batch, channels, size, size}, gen, 0.0, 1.0);  // (N, C, H, W)
  x.set_requires_grad(true);
  Tensor weight = Tensor::ones({channels});  // (C)
  Tensor bias = Tensor::zeros({channels});   // (C)
  weight.set_requires_grad(true);
  bias.set_requires_grad(true);
  Tensor running_mean = Tensor::zeros({channels}), running_var = Tensor::ones({channels});
  const Tensor grad_y = Tensor::randn(x.shape(), gen, 0.0, 1.0);  // (N, C, H, W)
  Tensor residual = Tensor::randn(x.shape(), gen, 0.0, 1.0);      // (N, C, H, W)
  residual.set_requires_grad(true);
  for (auto _ : state) {
    Tensor y;
    switch (unit) {
      case Unit::bn_then_relu:
        y = relu(batch_norm(x, weight, bias, running_mean, running_var, true));
        break;
      case Unit::bn_relu:
        y = batch_norm_relu(x, weight, bias, running_mean, running_var, true);
        break;
      case Unit::bn_then_add_relu:
        y = relu(add(batch_norm(x, weight, bias, running_mean, running_var, true), residual));
        break;
      case Unit::bn_add_relu:
        y = batch_norm_add_relu(x, residual, weight, bias, running_mean, running_var, true);
        break;
    }
    y.backward(grad_y);
    benchmark::DoNotOptimize(x.grad().data<float>());
    x.set_grad(Tensor());
    weight.set_grad(Tensor());
    bias.set_grad(Tensor());
    residual.set_grad(Tensor());
  }
  state.SetItemsProcessed(state.iterations() * x.numel());  // activations per second
}

void BM_BatchNormThenRelu(benchmark::State& s) {
  bn_relu_step(s, Unit::bn_then_relu);
}
void BM_BatchNormReluFused(benchmark::State& s) {
  bn_relu_step(s, Unit::bn_relu);
}
void BM_BatchNormThenAddRelu(benchmark::State& s) {
  bn_relu_step(s, Unit::bn_then_add_relu);
}
void BM_BatchNormAddReluFused(benchmark::State& s) {
  bn_relu_step(s, Unit::bn_add_relu);
}

#define RETORT_RESNET56_BN_SHAPES Args({16, 32})->Args({32, 16})->Args({64, 8})
BENCHMARK(BM_BatchNormThenRelu)->RETORT_RESNET56_BN_SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNormReluFused)->RETORT_RESNET56_BN_SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNormThenAddRelu)->RETORT_RESNET56_BN_SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNormAddReluFused)->RETORT_RESNET56_BN_SHAPES->Unit(benchmark::kMicrosecond);
#undef RETORT_RESNET56_BN_SHAPES

}  // namespace

BENCHMARK_MAIN();
