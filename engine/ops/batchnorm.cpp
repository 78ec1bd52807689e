// batch_norm: training (batch statistics, running-statistics update) and evaluation, with backward.
#include "kernels/batchnorm.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::record;

struct BatchNormBackward final : Node {
  kernels::BatchNormShape shape;
  bool training = true;
  double eps = 1e-5;
  Tensor x, weight;
  Tensor mean, invstd;        // training: the batch statistics of the forward
  Tensor running_mean, running_var;  // evaluation: a snapshot of the statistics used
  bool has_affine_inputs = true;
  std::string_view name() const override { return "batch_norm"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    Tensor gw = Tensor::empty({shape.channels}, x.dtype(), x.device());
    Tensor gb = Tensor::empty({shape.channels}, x.dtype(), x.device());
    dispatch<OpId::batch_norm>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      if (training) {
        kernels::batchnorm_backward_train(ctx, shape, x.data<T>(), g.data<T>(), weight.data<T>(),
                                          mean.data<T>(), invstd.data<T>(), gx.data<T>(),
                                          gw.data<T>(), gb.data<T>());
      } else {
        kernels::batchnorm_backward_eval(ctx, shape, x.data<T>(), g.data<T>(), weight.data<T>(),
                                         running_mean.data<T>(), running_var.data<T>(),
                                         static_cast<T>(eps), gx.data<T>(), gw.data<T>(),
                                         gb.data<T>());
      }
    });
    return {gx, gw, gb};
  }
  void release_saved() override { x = weight = mean = invstd = running_mean = running_var = Tensor(); }
};

void check_channel_vector(const Tensor& t, const Tensor& x, int64_t channels, const char* arg) {
  if (!t.defined()) return;
  check_floating(t, "batch_norm", arg);
  check_same_device_dtype(x, t, "batch_norm");
  if (t.shape() != Shape{channels}) {
    throw std::invalid_argument("batch_norm: " + std::string(arg) + " " + shape_str(t.shape()) +
                                " does not match the " + std::to_string(channels) +
                                " channels of input " + shape_str(x.shape()));
  }
  if (!t.is_contiguous()) {
    throw std::invalid_argument(std::string("batch_norm: ") + arg + " must be contiguous");
  }
}

}  // namespace

Tensor batch_norm(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum, double eps) {
  check_floating(x_in, "batch_norm", "x");
  if (x_in.dim() != 2 && x_in.dim() != 4) {
    throw std::invalid_argument("batch_norm: input must be (N, C) or (N, C, H, W), got " +
                                shape_str(x_in.shape()));
  }
  kernels::BatchNormShape s;
  s.batch = x_in.size(0);
  s.channels = x_in.size(1);
  s.spatial = x_in.dim() == 4 ? x_in.size(2) * x_in.size(3) : 1;
  check_channel_vector(weight_in, x_in, s.channels, "weight");
  check_channel_vector(bias_in, x_in, s.channels, "bias");
  check_channel_vector(running_mean, x_in, s.channels, "running_mean");
  check_channel_vector(running_var, x_in, s.channels, "running_var");
  if (running_mean.defined() != running_var.defined()) {
    throw std::invalid_argument("batch_norm: running_mean and running_var go together");
  }
  if (training && s.batch * s.spatial <= 1) {
    throw std::invalid_argument("batch_norm: training needs more than one value per channel, got "
                                "input " + shape_str(x_in.shape()));
  }
  if (!training && !running_mean.defined()) {
    throw std::invalid_argument("batch_norm: evaluation mode needs running_mean and running_var");
  }
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
    dispatch<OpId::batch_norm>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::batchnorm_forward_train(ctx, s, x.data<T>(), weight.data<T>(), bias.data<T>(),
                                       static_cast<T>(momentum), static_cast<T>(eps),
                                       rm.data<T>(), rv.data<T>(), y.data<T>(),
                                       save_mean.data<T>(), save_invstd.data<T>());
    });
  } else {
    dispatch<OpId::batch_norm>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::batchnorm_forward_eval(ctx, s, x.data<T>(), weight.data<T>(), bias.data<T>(),
                                      running_mean.data<T>(), running_var.data<T>(),
                                      static_cast<T>(eps), y.data<T>());
    });
  }
  record<BatchNormBackward>(y, {&x_in, &weight_in, &bias_in}, [&] {
    auto node = std::make_shared<BatchNormBackward>();
    node->shape = s;
    node->training = training;
    node->eps = eps;
    node->x = x.detach();
    node->weight = weight.detach();
    if (training) {
      node->mean = save_mean;
      node->invstd = save_invstd;
    } else {
      node->running_mean = running_mean.clone();
      node->running_var = running_var.clone();
    }
    return node;
  });
  return y;
}

}  // namespace retort
