// CPU twin of the fused optimiser updates (kernels/optim.h): PyTorch's SGD, element-parallel.
#include "kernels/optim.h"

#include "kernels/cpu/parallel.h"

namespace retort::kernels {

template <typename T>
void sgd_step(const CpuContext& ctx, int64_t n, T* param, const T* grad, T* momentum_buf,
              T lr_value, T momentum, T dampening, T weight_decay, bool nesterov, bool first_step,
              const T* lr_scalar) {
  const T lr = lr_scalar != nullptr ? *lr_scalar : lr_value;
  // Each element's update is independent and follows torch.optim.SGD's single-tensor path term
  // for term (weight decay added to the gradient, then the momentum buffer, then the step), so
  // the result is the same for any thread count. Like PyTorch, a zero weight decay is skipped
  // rather than added as 0 * param.
  const int threads = cpu_threads(ctx, n);
  if (momentum == T(0)) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
      const T d = weight_decay != T(0) ? grad[i] + weight_decay * param[i] : grad[i];
      param[i] -= lr * d;
    }
    return;
  }
  const T one_minus_dampening = T(1) - dampening;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    T d = weight_decay != T(0) ? grad[i] + weight_decay * param[i] : grad[i];
    // PyTorch seeds the buffer with a copy of d on the first step: no dampening there.
    const T buf = first_step ? d : momentum * momentum_buf[i] + one_minus_dampening * d;
    momentum_buf[i] = buf;
    d = nesterov ? d + momentum * buf : buf;
    param[i] -= lr * d;
  }
}

template <typename T>
void sgd_step_many(const CpuContext& ctx, const SgdSlot<T>* slots, int64_t count, T lr,
                   T momentum, T dampening, T weight_decay, bool nesterov, const T* lr_scalar) {
  for (int64_t i = 0; i < count; ++i) {
    const SgdSlot<T>& s = slots[i];
    sgd_step(ctx, s.n, s.param, s.grad, s.momentum_buf, lr, momentum, dampening, weight_decay,
             nesterov, s.first_step, lr_scalar);
  }
}

template void sgd_step<float>(const CpuContext&, int64_t, float*, const float*, float*, float,
                              float, float, float, bool, bool, const float*);
template void sgd_step<double>(const CpuContext&, int64_t, double*, const double*, double*, double,
                               double, double, double, bool, bool, const double*);
template void sgd_step_many<float>(const CpuContext&, const SgdSlot<float>*, int64_t, float, float,
                                   float, float, bool, const float*);
template void sgd_step_many<double>(const CpuContext&, const SgdSlot<double>*, int64_t, double,
                                    double, double, double, bool, const double*);

}  // namespace retort::kernels
