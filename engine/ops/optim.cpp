// sgd_step and sgd_step_many: the fused in-place SGD update of one or many parameter tensors.
#include "kernels/optim.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

// The checks of one parameter's step: shapes, devices, dtypes, contiguity and the buffer.
void check_sgd_operands(const Tensor& param, const Tensor& grad, const Tensor& momentum_buf,
                        const SgdStepOptions& o, const Tensor& lr_scalar) {
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
}

}  // namespace

void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buf, const SgdStepOptions& o,
              bool first_step, const Tensor& lr_scalar) {
  sgd_step_many({param}, {grad}, {momentum_buf}, {first_step}, o, lr_scalar);
}

void sgd_step_many(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                   const std::vector<Tensor>& momentum_bufs, const std::vector<bool>& first_steps,
                   const SgdStepOptions& o, const Tensor& lr_scalar) {
  const size_t count = params.size();
  if (grads.size() != count || momentum_bufs.size() != count || first_steps.size() != count) {
    throw std::invalid_argument("sgd_step_many: " + std::to_string(count) + " params need as "
                                "many grads, momentum buffers and first-step flags");
  }
  if (count == 0) return;
  for (size_t i = 0; i < count; ++i) {
    check_sgd_operands(params[i], grads[i], momentum_bufs[i], o, lr_scalar);
    check_same_device_dtype(params[0], params[i], "sgd_step_many");
  }
  NoGradGuard no_grad;
  dispatch<OpId::sgd_step>(params[0].device(), params[0].dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    std::vector<kernels::SgdSlot<T>> slots(count);
    for (size_t i = 0; i < count; ++i) {
      // The data pointers of the caller's handles: params[i] shares the caller's storage.
      slots[i].n = params[i].numel();
      slots[i].param = const_cast<T*>(params[i].data<T>());
      slots[i].grad = grads[i].data<T>();
      slots[i].momentum_buf = o.momentum != 0.0 ? momentum_bufs[i].data<T>() : nullptr;
      slots[i].first_step = first_steps[i];
    }
    kernels::sgd_step_many(ctx, slots.data(), static_cast<int64_t>(count), static_cast<T>(o.lr),
                           static_cast<T>(o.momentum), static_cast<T>(o.dampening),
                           static_cast<T>(o.weight_decay), o.nesterov,
                           lr_scalar.defined() ? lr_scalar.data<T>() : nullptr);
  });
}

}  // namespace retort
