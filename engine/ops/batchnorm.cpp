// batch_norm, batch_norm_relu and batch_norm_add_relu: training (batch statistics,
// running-statistics update) and evaluation, with backward.
#include "kernels/batchnorm.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::record;

// kOp is batch_norm, batch_norm_relu or batch_norm_add_relu; the last two also keep their output,
// whose sign is the ReLU's mask, and the last one has the residual as a fourth input.
template <OpId kOp>
struct BatchNormBackward final : Node {
  kernels::BatchNormShape shape;
  bool training = true;
  double eps = 1e-5;
  Tensor x, weight;
  Tensor mean, invstd;        // training: the batch statistics of the forward
  Tensor running_mean, running_var;  // evaluation: a snapshot of the statistics used
  Tensor relu_y;              // with the ReLU: the output (N, C[, H, W])
  std::string_view name() const override { return op_info(kOp).name; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    Tensor gw = Tensor::empty({shape.channels}, x.dtype(), x.device());
    Tensor gb = Tensor::empty({shape.channels}, x.dtype(), x.device());
    // The residual's gradient is the masked grad_y that BN receives, written in the same pass.
    Tensor gr;
    if (kOp == OpId::batch_norm_add_relu && next_edges[3].active()) {
      gr = Tensor::empty(x.shape(), x.dtype(), x.device());
    }
    dispatch<kOp>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      const T* mask = relu_y.defined() ? relu_y.data<T>() : nullptr;
      T* grad_residual = gr.defined() ? gr.data<T>() : nullptr;
      if (training) {
        kernels::batchnorm_backward_train(ctx, shape, x.data<T>(), g.data<T>(), weight.data<T>(),
                                          mean.data<T>(), invstd.data<T>(), gx.data<T>(),
                                          gw.data<T>(), gb.data<T>(), mask, grad_residual);
      } else {
        kernels::batchnorm_backward_eval(ctx, shape, x.data<T>(), g.data<T>(), weight.data<T>(),
                                         running_mean.data<T>(), running_var.data<T>(),
                                         static_cast<T>(eps), gx.data<T>(), gw.data<T>(),
                                         gb.data<T>(), mask, grad_residual);
      }
    });
    if constexpr (kOp == OpId::batch_norm_add_relu) return {gx, gw, gb, gr};
    return {gx, gw, gb};
  }
  void release_saved() override {
    x = weight = mean = invstd = running_mean = running_var = relu_y = Tensor();
  }
};

void check_channel_vector(const Tensor& t, const Tensor& x, int64_t channels, const char* op,
                          const char* arg) {
  if (!t.defined()) return;
  check_floating(t, op, arg);
  check_same_device_dtype(x, t, op);
  if (t.shape() != Shape{channels}) {
    throw std::invalid_argument(std::string(op) + ": " + arg + " " + shape_str(t.shape()) +
                                " does not match the " + std::to_string(channels) +
                                " channels of input " + shape_str(x.shape()));
  }
  if (!t.is_contiguous()) {
    throw std::invalid_argument(std::string(op) + ": " + arg + " must be contiguous");
  }
}

template <OpId kOp>
Tensor batch_norm_impl(const Tensor& x_in, const Tensor& residual_in, const Tensor& weight_in,
                       const Tensor& bias_in, const Tensor& running_mean,
                       const Tensor& running_var, bool training, double momentum, double eps) {
  constexpr bool kAdd = kOp == OpId::batch_norm_add_relu;
  constexpr bool kRelu = kOp == OpId::batch_norm_relu || kAdd;
  const std::string op(op_info(kOp).name);
  const char* name = op.c_str();
  check_floating(x_in, name, "x");
  if (x_in.dim() != 2 && x_in.dim() != 4) {
    throw std::invalid_argument(op + ": input must be (N, C) or (N, C, H, W), got " +
                                shape_str(x_in.shape()));
  }
  kernels::BatchNormShape s;
  s.batch = x_in.size(0);
  s.channels = x_in.size(1);
  s.spatial = x_in.dim() == 4 ? x_in.size(2) * x_in.size(3) : 1;
  check_channel_vector(weight_in, x_in, s.channels, name, "weight");
  check_channel_vector(bias_in, x_in, s.channels, name, "bias");
  check_channel_vector(running_mean, x_in, s.channels, name, "running_mean");
  check_channel_vector(running_var, x_in, s.channels, name, "running_var");
  if (running_mean.defined() != running_var.defined()) {
    throw std::invalid_argument(op + ": running_mean and running_var go together");
  }
  if (training && s.batch * s.spatial <= 1) {
    throw std::invalid_argument(op + ": training needs more than one value per channel, got "
                                "input " + shape_str(x_in.shape()));
  }
  if (!training && !running_mean.defined()) {
    throw std::invalid_argument(op + ": evaluation mode needs running_mean and running_var");
  }
  if constexpr (kAdd) {
    check_floating(residual_in, name, "residual");
    check_same_device_dtype(x_in, residual_in, name);
    if (residual_in.shape() != x_in.shape()) {
      throw std::invalid_argument(op + ": residual " + shape_str(residual_in.shape()) +
                                  " does not match input " + shape_str(x_in.shape()));
    }
  }
  const Tensor residual = kAdd ? residual_in.contiguous() : Tensor();
  Tensor weight = weight_in.defined() ? weight_in : Tensor::ones({s.channels}, x_in.dtype(), x_in.device());
  Tensor bias = bias_in.defined() ? bias_in : Tensor::zeros({s.channels}, x_in.dtype(), x_in.device());
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor save_mean, save_invstd;
  if (training) {
    save_mean = Tensor::empty({s.channels}, x.dtype(), x.device());
    save_invstd = Tensor::empty({s.channels}, x.dtype(), x.device());
    // Without running buffers the kernel updates scratch copies that are thrown away.
    Tensor rm = running_mean.defined() ? running_mean : Tensor::zeros({s.channels}, x.dtype(), x.device());
    Tensor rv = running_var.defined() ? running_var : Tensor::ones({s.channels}, x.dtype(), x.device());
    dispatch<kOp>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::batchnorm_forward_train(ctx, s, x.data<T>(), weight.data<T>(), bias.data<T>(),
                                       static_cast<T>(momentum), static_cast<T>(eps),
                                       rm.data<T>(), rv.data<T>(), y.data<T>(),
                                       save_mean.data<T>(), save_invstd.data<T>(), kRelu,
                                       kAdd ? residual.data<T>() : nullptr);
    });
  } else {
    dispatch<kOp>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::batchnorm_forward_eval(ctx, s, x.data<T>(), weight.data<T>(), bias.data<T>(),
                                      running_mean.data<T>(), running_var.data<T>(),
                                      static_cast<T>(eps), y.data<T>(), kRelu,
                                      kAdd ? residual.data<T>() : nullptr);
    });
  }
  auto make = [&] {
    auto node = std::make_shared<BatchNormBackward<kOp>>();
    node->shape = s;
    node->training = training;
    node->eps = eps;
    // Even with the ReLU, x is needed: grad_x depends on xhat where the mask is 0 too, and y
    // cannot give xhat back there (nor anywhere when gamma = 0).
    node->x = x.detach();
    node->weight = weight.detach();
    if (training) {
      node->mean = save_mean;
      node->invstd = save_invstd;
    } else {
      node->running_mean = running_mean.clone();
      node->running_var = running_var.clone();
    }
    if constexpr (kRelu) node->relu_y = y.detach();
    return node;
  };
  if constexpr (kAdd) {
    record<BatchNormBackward<kOp>>(y, {&x_in, &weight_in, &bias_in, &residual_in}, make);
  } else {
    record<BatchNormBackward<kOp>>(y, {&x_in, &weight_in, &bias_in}, make);
  }
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum, double eps) {
  return batch_norm_impl<OpId::batch_norm>(x, Tensor(), weight, bias, running_mean, running_var,
                                           training, momentum, eps);
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Tensor& running_mean, const Tensor& running_var, bool training,
                       double momentum, double eps) {
  return batch_norm_impl<OpId::batch_norm_relu>(x, Tensor(), weight, bias, running_mean,
                                                running_var, training, momentum, eps);
}

Tensor batch_norm_add_relu(const Tensor& x, const Tensor& residual, const Tensor& weight,
                           const Tensor& bias, const Tensor& running_mean,
                           const Tensor& running_var, bool training, double momentum,
                           double eps) {
  return batch_norm_impl<OpId::batch_norm_add_relu>(x, residual, weight, bias, running_mean,
                                                    running_var, training, momentum, eps);
}

}  // namespace retort
