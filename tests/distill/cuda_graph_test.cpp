// A training step replayed as a CUDA graph against the same step run op by op: same bits, same
// BN counters; and the capture's rules enforced with clear errors. GPU tests skip without one.
#include <gtest/gtest.h>

#include <string>

#include "distill/graph_step.h"
#include "distill/kd.h"
#include "engine/graph.h"
#include "engine/rng.h"
#include "engine/ops.h"
#include "nn/models/registry.h"
#include "nn/optim.h"
#include "tests/cuda_test.h"
#include "tests/distill/distill_test_util.h"

#if RETORT_WITH_CUDA
#include "engine/cuda/runtime.h"
#endif

namespace retort::distill {
namespace {

using CudaGraphStep = test::CudaTest;

std::vector<data::Batch> batches(int64_t count, int64_t batch, const Device& device) {
  Generator gen(17);
  std::vector<data::Batch> out;
  for (int64_t i = 0; i < count; ++i) {
    std::vector<int64_t> labels(static_cast<size_t>(batch));
    for (int64_t k = 0; k < batch; ++k) labels[k] = (k * 3 + i) % 10;
    out.push_back({Tensor::randn({batch, 1, 12, 12}, gen, 0.0, 1.0, DType::f32, device),
                   Tensor::from_vector(labels, {batch}, device),
                   Tensor::from_vector(labels, {batch}, device)});
  }
  return out;
}

// A KD step (folded teacher, student forward/backward, SGD with momentum) with its loss summed
// on the device, as the Trainer does.
struct KdSetup {
  std::shared_ptr<nn::Module> student, teacher;
  std::unique_ptr<KdObjective> kd;
  std::unique_ptr<nn::SGD> sgd;
  Tensor loss_sum = Tensor::zeros({}, DType::f32, Device::cuda());
  KdSetup() {
    student = nn::create_model("resnet8", {1, 10, 1});
    teacher = nn::create_model("resnet14", {1, 10, 2});
    student->to(Device::cuda());
    teacher->to(Device::cuda());
    kd = std::make_unique<KdObjective>(teacher, KdOptions{});
    sgd = std::make_unique<nn::SGD>(student->named_parameters(),
                                    nn::SgdOptions{0.05, 0.9, 0.0, 5e-4, true});
  }
  void step(const data::Batch& b) {
    Tensor logits = (*student)(b.images);
    Tensor loss = kd->loss(logits, b);
    sgd->zero_grad();
    loss.backward();
    sgd->step();
    accumulate_(loss_sum, loss.detach());
  }
};

TEST_F(CudaGraphStep, ReplayGivesTheEagerStepsBits) {
  const auto data = batches(8, 16, Device::cuda());
  KdSetup eager, graphed;
  GraphedStep step(graphed.student, [&](const data::Batch& b) { graphed.step(b); }, Device::cuda());
  for (int64_t i = 0; i < 8; ++i) {
    eager.step(data[i]);
    step.run(data[i]);
  }
  EXPECT_TRUE(step.captured());
  EXPECT_EQ(step.eager_steps(), 3);
  EXPECT_EQ(step.replays(), 5);
  EXPECT_TRUE(test::weight_bytes(*eager.student) == test::weight_bytes(*graphed.student))
      << "weights (or BN statistics and counters) differ after replaying";
  EXPECT_EQ(eager.loss_sum.item(), graphed.loss_sum.item());
  // A partial batch runs eagerly beside the graph and matches too.
  const auto last = batches(1, 5, Device::cuda());
  eager.step(last[0]);
  step.run(last[0]);
  EXPECT_EQ(step.eager_steps(), 4);
  EXPECT_TRUE(test::weight_bytes(*eager.student) == test::weight_bytes(*graphed.student));
}

#if RETORT_WITH_CUDA
// The Trainer recaptures every epoch: a new capture takes the memory its predecessor's pool gave
// back, so the device's footprint stops growing after the first recapture; and the kernel count
// of a captured step is reported.
TEST_F(CudaGraphStep, RecapturesReuseTheMemoryOfEarlierGraphs) {
  const auto data = batches(4, 16, Device::cuda());
  KdSetup setup;
  GraphedStep step(setup.student, [&](const data::Batch& b) { setup.step(b); }, Device::cuda());
  for (int64_t i = 0; i < 4; ++i) step.run(data[i]);  // three eager, one captured
  EXPECT_GT(step.kernels_per_replay(), 50);
  uint64_t mallocs_after_second = 0;
  for (int epoch = 0; epoch < 6; ++epoch) {
    step.recapture();
    step.run(data[static_cast<size_t>(epoch % 4)]);
    synchronize(Device::cuda());
    if (epoch == 1) mallocs_after_second = cuda::allocator_stats(0).device_mallocs;
  }
  EXPECT_EQ(cuda::allocator_stats(0).device_mallocs, mallocs_after_second)
      << "each recapture allocated new device memory";
}
#endif  // RETORT_WITH_CUDA

TEST_F(CudaGraphStep, HostCopiesInsideACaptureAreRefused) {
  Tensor x = Tensor::ones({4}, DType::f32, Device::cuda());
  CudaGraph graph(Device::cuda());
  try {
    graph.capture([&] { (void)sum(x).item(); });
    FAIL() << "expected an error";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("capture"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(graph.captured());
  // The device is usable afterwards, and a valid capture replays.
  Tensor y = Tensor::zeros({4}, DType::f32, Device::cuda());
  graph.capture([&] { accumulate_(y, x); });
  graph.replay();
  graph.replay();
  EXPECT_EQ(y.to_vector<float>(), std::vector<float>(4, 2.0f));
}

TEST_F(CudaGraphStep, AConvShapeFirstSeenInACaptureIsRefused) {
  Generator gen(1);
  Tensor x = Tensor::randn({3, 5, 9, 7}, gen, 0.0, 1.0, DType::f32, Device::cuda());
  Tensor w = Tensor::randn({6, 5, 3, 3}, gen, 0.0, 1.0, DType::f32, Device::cuda());
  CudaGraph graph(Device::cuda());
  try {
    graph.capture([&] { (void)conv2d(x, w, Tensor(), Conv2dOptions::make(1, 1, 1)); });
    FAIL() << "expected an error";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("eagerly"), std::string::npos) << e.what();
  }
}

TEST(CudaGraphErrors, GraphsNeedACudaDevice) {
  EXPECT_THROW(CudaGraph graph(Device::cpu()), std::invalid_argument);
  EXPECT_THROW(GraphedStep(nullptr, [](const data::Batch&) {}, Device::cuda()),
               std::invalid_argument);
}

}  // namespace
}  // namespace retort::distill
