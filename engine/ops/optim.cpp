// sgd_step: the fused in-place SGD update of one parameter tensor.
#include "kernels/optim.h"

#include "engine/ops/common.h"

namespace retort {

void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buf, const SgdStepOptions& o,
              bool first_step, const Tensor& lr_scalar) {
  ops_detail::check_floating(param, "sgd_step", "param");
  ops_detail::check_floating(grad, "sgd_step", "grad");
  check_same_device_dtype(param, grad, "sgd_step");
  if (param.shape() != grad.shape() || !param.is_contiguous() || !grad.is_contiguous()) {
    throw std::invalid_argument("sgd_step: param " + param.str() + " and grad " + grad.str() +
                                " must be contiguous and of the same shape");
  }
  if (o.momentum != 0.0) {
    ops_detail::check_floating(momentum_buf, "sgd_step", "momentum_buf");
    check_same_device_dtype(param, momentum_buf, "sgd_step");
    if (momentum_buf.shape() != param.shape() || !momentum_buf.is_contiguous()) {
      throw std::invalid_argument("sgd_step: momentum buffer " + momentum_buf.str() +
                                  " does not match param " + param.str());
    }
  }
  if (lr_scalar.defined()) {
    check_same_device_dtype(param, lr_scalar, "sgd_step");
    if (lr_scalar.numel() != 1) {
      throw std::invalid_argument("sgd_step: lr_scalar must hold one value, got " +
                                  lr_scalar.str());
    }
  }
  NoGradGuard no_grad;
  dispatch<OpId::sgd_step>(param.device(), param.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::sgd_step(ctx, param.numel(), param.data<T>(), grad.data<T>(),
                      o.momentum != 0.0 ? momentum_buf.data<T>() : nullptr,
                      static_cast<T>(o.lr), static_cast<T>(o.momentum),
                      static_cast<T>(o.dampening), static_cast<T>(o.weight_decay), o.nesterov,
                      first_step, lr_scalar.defined() ? lr_scalar.data<T>() : nullptr);
  });
}

}  // namespace retort
