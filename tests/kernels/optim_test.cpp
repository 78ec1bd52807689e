// Tests of the CPU SGD step against a hand-written reference of torch.optim.SGD's update rule.
#include "kernels/optim.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::random_vector;

const CpuContext kCpu{};

struct SgdConfig {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
};

// torch.optim.SGD's _single_tensor_sgd for one parameter, element by element, in double:
//   if weight_decay != 0: d_p = d_p + weight_decay * p
//   if momentum != 0:
//     buf = d_p.clone() on the first step, else buf = momentum * buf + (1 - dampening) * d_p
//     d_p = d_p + momentum * buf if nesterov else buf
//   p = p - lr * d_p
class ReferenceSgd {
 public:
  explicit ReferenceSgd(SgdConfig config) : config_(config) {}

  void step(std::vector<double>& param, const std::vector<double>& grad) {
    if (config_.momentum != 0 && !buf_) buf_.emplace();
    const bool first = buf_ && buf_->empty();
    if (first) buf_->resize(param.size());
    for (size_t i = 0; i < param.size(); ++i) {
      double d_p = grad[i];
      if (config_.weight_decay != 0) d_p = d_p + config_.weight_decay * param[i];
      if (config_.momentum != 0) {
        double& buf = (*buf_)[i];
        buf = first ? d_p : config_.momentum * buf + (1 - config_.dampening) * d_p;
        d_p = config_.nesterov ? d_p + config_.momentum * buf : buf;
      }
      param[i] = param[i] - config_.lr * d_p;
    }
  }
  const std::vector<double>& momentum_buffer() const { return *buf_; }

 private:
  SgdConfig config_;
  std::optional<std::vector<double>> buf_;
};

const SgdConfig kConfigs[] = {
    {0.1, 0.0, 0.0, 0.0, false},     // plain SGD
    {0.05, 0.0, 0.0, 1e-2, false},   // weight decay, no momentum
    {0.1, 0.9, 0.0, 0.0, false},     // heavy ball
    {0.1, 0.9, 0.0, 0.0, true},      // nesterov
    {0.03, 0.8, 0.3, 5e-4, false},   // dampening + weight decay
    {0.03, 0.8, 0.0, 5e-4, true},    // nesterov + weight decay
    {0.2, 0.5, 0.5, 1e-1, false},    // heavy dampening and decay
    {0.01, 0.99, 0.1, 1e-3, false},  // long memory
};

std::string describe(const SgdConfig& c) {
  return "lr=" + std::to_string(c.lr) + " momentum=" + std::to_string(c.momentum) +
         " dampening=" + std::to_string(c.dampening) +
         " weight_decay=" + std::to_string(c.weight_decay) +
         " nesterov=" + std::to_string(c.nesterov);
}

template <typename T>
class OptimTyped : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OptimTyped, Dtypes);

// The float64 absolute floor equals its relative bound: parameters are O(1) and some pass near 0.
template <typename T>
double rel_tol() {
  return sizeof(T) == 4 ? test::kReferenceF32Rel : test::kReferenceF64Rel;
}
template <typename T>
double abs_tol() {
  return sizeof(T) == 4 ? test::kReferenceF32Abs : test::kReferenceF64Abs;
}

// Six steps with a fresh gradient each, for every configuration; param and momentum buffer
// must track the reference after each step.
TYPED_TEST(OptimTyped, MatchesPytorchRuleOverSeveralSteps) {
  using T = TypeParam;
  const int64_t n = 1001;
  for (const SgdConfig& config : kConfigs) {
    auto param = random_vector<T>(n, 1);
    std::vector<double> param_ref(param.begin(), param.end());
    std::vector<T> momentum_buf(n, T(0));
    ReferenceSgd reference(config);
    for (int step = 0; step < 6; ++step) {
      const auto grad = random_vector<T>(n, 100 + step);
      sgd_step<T>(kCpu, n, param.data(), grad.data(),
                  config.momentum != 0 ? momentum_buf.data() : nullptr, T(config.lr),
                  T(config.momentum), T(config.dampening), T(config.weight_decay), config.nesterov,
                  step == 0);
      reference.step(param_ref, std::vector<double>(grad.begin(), grad.end()));
      ASSERT_TRUE(all_close(param, param_ref, rel_tol<T>(), abs_tol<T>()))
          << describe(config) << " step " << step;
      if (config.momentum != 0) {
        ASSERT_TRUE(
            all_close(momentum_buf, reference.momentum_buffer(), rel_tol<T>(), abs_tol<T>()))
            << describe(config) << " step " << step;
      }
    }
  }
}

// Worked by hand: p = 1, g = 0.5 twice, lr = 0.1, momentum = 0.9.
//   heavy ball: buf = 0.5, p = 0.95; buf = 0.45 + 0.5 = 0.95, p = 0.95 - 0.095 = 0.855
//   nesterov:   buf = 0.5, d = 0.5 + 0.45 = 0.95, p = 0.905;
//               buf = 0.95, d = 0.5 + 0.855 = 1.355, p = 0.905 - 0.1355 = 0.7695
//   dampening 0.5 (heavy ball): first step undamped: buf = 0.5, p = 0.95;
//               buf = 0.45 + 0.25 = 0.7, p = 0.95 - 0.07 = 0.88
//   weight decay 0.1, momentum 0: d = 0.5 + 0.1 = 0.6, p = 0.94; d = 0.5 + 0.094, p = 0.8806
TEST(Optim, HandWorkedTwoSteps) {
  struct Case {
    double momentum, dampening, weight_decay;
    bool nesterov;
    double after_first, after_second;
  };
  const Case cases[] = {{0.9, 0.0, 0.0, false, 0.95, 0.855},
                        {0.9, 0.0, 0.0, true, 0.905, 0.7695},
                        {0.9, 0.5, 0.0, false, 0.95, 0.88},
                        {0.0, 0.0, 0.1, false, 0.94, 0.8806}};
  for (const Case& c : cases) {
    double param = 1.0, buf = 0.0;
    const double grad = 0.5;
    sgd_step<double>(kCpu, 1, &param, &grad, &buf, 0.1, c.momentum, c.dampening, c.weight_decay,
                     c.nesterov, true);
    EXPECT_NEAR(param, c.after_first, test::kReferenceF64Rel);
    sgd_step<double>(kCpu, 1, &param, &grad, &buf, 0.1, c.momentum, c.dampening, c.weight_decay,
                     c.nesterov, false);
    EXPECT_NEAR(param, c.after_second, test::kReferenceF64Rel);
  }
}

// With momentum = 0 the buffer is never touched, so it may be null.
TYPED_TEST(OptimTyped, NullMomentumBufferWithoutMomentum) {
  using T = TypeParam;
  const int64_t n = 64;
  auto param = random_vector<T>(n, 3);
  const auto grad = random_vector<T>(n, 4);
  std::vector<double> expected(n);
  for (int64_t i = 0; i < n; ++i) {
    expected[i] = double(param[i]) - 0.1 * (double(grad[i]) + 0.01 * double(param[i]));
  }
  sgd_step<T>(kCpu, n, param.data(), grad.data(), nullptr, T(0.1), T(0), T(0), T(0.01), false,
              true);
  EXPECT_TRUE(all_close(param, expected, rel_tol<T>(), abs_tol<T>()));
}

// Large enough to take the parallel path: one thread and several give identical bits.
TYPED_TEST(OptimTyped, ThreadCountDoesNotChangeResult) {
  using T = TypeParam;
  const int64_t n = 100003;
  const auto param0 = random_vector<T>(n, 5);
  const auto grad = random_vector<T>(n, 6);
  auto run = [&](int threads) {
    auto param = param0;
    std::vector<T> buf(n, T(0));
    for (int step = 0; step < 3; ++step) {
      sgd_step<T>(CpuContext{threads}, n, param.data(), grad.data(), buf.data(), T(0.05), T(0.9),
                  T(0.1), T(1e-4), true, step == 0);
    }
    param.insert(param.end(), buf.begin(), buf.end());
    return param;
  };
  EXPECT_EQ(run(1), run(3));
}

// Many tensors in one call (sizes 0 to thousands, first steps mixed) give the bits of one
// sgd_step per tensor, with and without momentum, the learning rate by value or from memory.
TYPED_TEST(OptimTyped, ManyTensorsEqualOneStepEach) {
  using T = TypeParam;
  const std::vector<int64_t> sizes = {5, 0, 1, 4097, 64, 3, 1000};
  for (const SgdConfig& c : kConfigs) {
    for (const bool from_memory : {false, true}) {
      SCOPED_TRACE(describe(c) + (from_memory ? " lr from memory" : ""));
      const bool momentum = c.momentum != 0;
      std::vector<std::vector<T>> params, bufs, grads, expected_params, expected_bufs;
      for (size_t i = 0; i < sizes.size(); ++i) {
        const auto n = static_cast<size_t>(sizes[i]);
        params.push_back(random_vector<T>(n, 40 + static_cast<uint32_t>(i)));
        grads.push_back(random_vector<T>(n, 60 + static_cast<uint32_t>(i)));
        bufs.push_back(random_vector<T>(n, 80 + static_cast<uint32_t>(i)));
      }
      expected_params = params;
      expected_bufs = bufs;
      const T lr = static_cast<T>(c.lr);
      std::vector<SgdSlot<T>> slots(sizes.size());
      for (size_t i = 0; i < sizes.size(); ++i) {
        const bool first = i % 3 == 0;
        sgd_step<T>(kCpu, sizes[i], expected_params[i].data(), grads[i].data(),
                    momentum ? expected_bufs[i].data() : nullptr, lr, T(c.momentum),
                    T(c.dampening), T(c.weight_decay), c.nesterov, first);
        slots[i] = {sizes[i], params[i].data(), grads[i].data(),
                    momentum ? bufs[i].data() : nullptr, first};
      }
      sgd_step_many<T>(kCpu, slots.data(), static_cast<int64_t>(slots.size()),
                       from_memory ? T(123) : lr, T(c.momentum), T(c.dampening),
                       T(c.weight_decay), c.nesterov, from_memory ? &lr : nullptr);
      EXPECT_EQ(params, expected_params);
      EXPECT_EQ(bufs, expected_bufs);
    }
  }
}

}  // namespace
}  // namespace retort::kernels
