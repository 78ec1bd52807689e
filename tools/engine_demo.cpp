// Placeholder main job until the `retort demo` distillation command exists: trains a small CNN,
// written directly against the engine's ops, on a synthetic 10-class image task.
#include <chrono>
#include <cstdio>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"

using namespace retort;

namespace {

struct Param {
  Tensor value, momentum;
};

Tensor make_param(const Shape& shape, double scale, Generator& gen, std::vector<Param>& params) {
  Tensor t = Tensor::randn(shape, gen, 0.0, scale);
  t.set_requires_grad(true);
  params.push_back({t, Tensor::zeros(shape)});
  return t;
}

}  // namespace

int main() {
  std::printf(
      "retort engine demo (placeholder: the Fashion-MNIST distillation demo arrives with the\n"
      "training and distillation layers). A conv -> BN -> ReLU -> pool -> linear network learns\n"
      "to tell 10 synthetic 12x12 patterns apart under noise, on the CPU.\n\n");
  Generator gen(2026);
  const int64_t classes = 10, batch = 64, side = 12;
  // Each class is a fixed random pattern; a sample is its pattern plus heavy Gaussian noise.
  Tensor prototypes = Tensor::randn({classes, 1, side, side}, gen);

  std::vector<Param> params;
  Tensor conv_w = make_param({8, 1, 3, 3}, 0.47, gen, params);
  Tensor bn_w = Tensor::ones({8}).set_requires_grad(true);
  Tensor bn_b = Tensor::zeros({8}).set_requires_grad(true);
  params.push_back({bn_w, Tensor::zeros({8})});
  params.push_back({bn_b, Tensor::zeros({8})});
  Tensor running_mean = Tensor::zeros({8}), running_var = Tensor::ones({8});
  Tensor fc_w = make_param({classes, 8 * 6 * 6}, 0.05, gen, params);
  Tensor fc_b = Tensor::zeros({classes}).set_requires_grad(true);
  params.push_back({fc_b, Tensor::zeros({classes})});

  auto forward = [&](const Tensor& x, bool training) {
    Tensor h = conv2d(x, conv_w, Tensor(), Conv2dOptions::make(1, 1));
    h = relu(batch_norm(h, bn_w, bn_b, running_mean, running_var, training));
    h = max_pool2d(h, Pool2dOptions::make(2));
    return linear(h.flatten(1), fc_w, fc_b);
  };
  auto sample = [&](int64_t n) {
    std::vector<int64_t> labels(static_cast<size_t>(n));
    Tensor pick = Tensor::rand({n}, gen, 0.0, static_cast<double>(classes));
    const std::vector<float> u = pick.to_vector<float>();
    Tensor x = Tensor::randn({n, 1, side, side}, gen, 0.0, 3.0);
    for (int64_t i = 0; i < n; ++i) {
      labels[i] = std::min<int64_t>(static_cast<int64_t>(u[i]), classes - 1);
      x.narrow(0, i, 1).copy_(add(x.narrow(0, i, 1), prototypes.narrow(0, labels[i], 1)));
    }
    return std::make_pair(x, Tensor::from_vector(labels, {n}));
  };

  const auto start = std::chrono::steady_clock::now();
  SgdStepOptions sgd{0.05, 0.9, 0.0, 5e-4, false};
  for (int step = 1; step <= 200; ++step) {
    auto [x, y] = sample(batch);
    Tensor loss = cross_entropy(forward(x, true), y);
    for (Param& p : params) p.value.set_grad(Tensor());
    loss.backward();
    for (Param& p : params) sgd_step(p.value, p.value.grad(), p.momentum, sgd, step == 1);
    if (step % 50 == 0) std::printf("step %3d  loss %.4f\n", step, loss.item());
  }
  NoGradGuard no_grad;
  auto [x, y] = sample(1000);
  const std::vector<float> logits = forward(x, false).to_vector<float>();
  const std::vector<int64_t> labels = y.to_vector<int64_t>();
  int correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    size_t best = 0;
    for (size_t c = 1; c < static_cast<size_t>(classes); ++c) {
      if (logits[i * classes + c] > logits[i * classes + best]) best = c;
    }
    correct += best == static_cast<size_t>(labels[i]);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\nheld-out accuracy %.1f%% on 1000 fresh samples (chance 10%%), %.1f s\n",
              100.0 * correct / labels.size(), seconds);
  return 0;
}
