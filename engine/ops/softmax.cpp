// softmax and log_softmax along the last dimension, with a temperature.
#include "kernels/softmax.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::record;

template <OpId kOp>
struct SoftmaxBackward final : Node {
  Tensor y;
  double temperature = 1.0;
  std::string_view name() const override { return op_info(kOp).name; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(y.shape(), y.dtype(), y.device());
    const int64_t cols = y.size(-1), rows = y.numel() / cols;
    dispatch<kOp>(y.device(), y.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::softmax_backward(ctx, rows, cols, static_cast<T>(temperature),
                                kOp == OpId::log_softmax, y.data<T>(), g.data<T>(), gx.data<T>());
    });
    return {gx};
  }
  void release_saved() override { y = Tensor(); }
};

template <OpId kOp>
Tensor softmax_impl(const Tensor& x_in, double temperature) {
  const char* name = op_info(kOp).name.data();
  check_floating(x_in, name, "x");
  if (x_in.dim() < 1 || x_in.size(-1) < 1) {
    throw std::invalid_argument(std::string(name) + ": needs a non-empty last dimension, got " +
                                shape_str(x_in.shape()));
  }
  if (!(temperature > 0.0)) {
    throw std::invalid_argument(std::string(name) + ": temperature must be > 0, got " +
                                std::to_string(temperature));
  }
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  dispatch<kOp>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::softmax_forward(ctx, rows, cols, static_cast<T>(temperature),
                             kOp == OpId::log_softmax, x.data<T>(), y.data<T>());
  });
  record<SoftmaxBackward<kOp>>(y, {&x_in}, [&] {
    auto node = std::make_shared<SoftmaxBackward<kOp>>();
    node->y = y.detach();
    node->temperature = temperature;
    return node;
  });
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, double temperature) {
  return softmax_impl<OpId::softmax>(x, temperature);
}

Tensor log_softmax(const Tensor& x, double temperature) {
  return softmax_impl<OpId::log_softmax>(x, temperature);
}

}  // namespace retort
