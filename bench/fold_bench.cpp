// The KD teacher's evaluation forward with and without BN folded into its convs (nn/fold.h), on
// the CPU (and on cuda:0 when one is present): resnet32x4 on CIFAR-100-shaped batches of 64.
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

void BM_TeacherForwardCpu(benchmark::State& s) { teacher_forward(s, false, Device::cpu()); }
void BM_TeacherForwardCpuFolded(benchmark::State& s) { teacher_forward(s, true, Device::cpu()); }
void BM_TeacherForwardCuda(benchmark::State& s) { teacher_forward(s, false, Device::cuda()); }
void BM_TeacherForwardCudaFolded(benchmark::State& s) { teacher_forward(s, true, Device::cuda()); }

BENCHMARK(BM_TeacherForwardCpu)->Arg(16)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TeacherForwardCpuFolded)->Arg(16)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TeacherForwardCuda)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TeacherForwardCudaFolded)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
