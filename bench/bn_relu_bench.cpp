// Training-mode batch norm + ReLU on the CPU, unfused (relu(batch_norm(x))) against fused
// (batch_norm_relu), forward and backward through autograd, at the resnet56 BN shapes, 2 threads.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/rng.h"

namespace {

using namespace retort;

// (64, channels, size, size): the three stages of resnet56 at batch 64.
void bn_relu_step(benchmark::State& state, bool fused) {
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
  for (auto _ : state) {
    const Tensor y = fused ? batch_norm_relu(x, weight, bias, running_mean, running_var, true)
                           : relu(batch_norm(x, weight, bias, running_mean, running_var, true));
    y.backward(grad_y);
    benchmark::DoNotOptimize(x.grad().data<float>());
    x.set_grad(Tensor());
    weight.set_grad(Tensor());
    bias.set_grad(Tensor());
  }
  state.SetItemsProcessed(state.iterations() * x.numel());  // activations per second
}

void BM_BatchNormThenRelu(benchmark::State& s) {
  bn_relu_step(s, false);
}
void BM_BatchNormReluFused(benchmark::State& s) {
  bn_relu_step(s, true);
}

#define RETORT_RESNET56_BN_SHAPES Args({16, 32})->Args({32, 16})->Args({64, 8})
BENCHMARK(BM_BatchNormThenRelu)->RETORT_RESNET56_BN_SHAPES->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNormReluFused)->RETORT_RESNET56_BN_SHAPES->Unit(benchmark::kMicrosecond);
#undef RETORT_RESNET56_BN_SHAPES

}  // namespace

BENCHMARK_MAIN();
