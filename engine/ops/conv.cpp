// conv2d and conv2d_fused (+ residual, activation): shape checks, the forward through
// kernels/conv.h, and backward for x, w, bias (and residual).
#include "kernels/conv.h"

#include "kernels/elementwise.h"
#include "kernels/reduce.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::check_rank;
using ops_detail::record;

struct ConvGradients {
  Tensor x, weight, bias;
};

// The gradients of y = conv(x, weight) + bias[c] for grad_y g (contiguous, shaped as y); only the
// wanted ones are computed. x is needed for the weight's gradient, weight for x's. Shared by
// conv2d and conv2d_fused, each dispatching under its own OpId.
template <OpId kOp>
ConvGradients conv_gradients(const kernels::Conv2dShape& shape, const Tensor& x,
                             const Tensor& weight, const Tensor& g, bool want_x, bool want_weight,
                             bool want_bias) {
  ConvGradients out;
  const Shape x_shape = {shape.batch, shape.in_channels, shape.in_h, shape.in_w};
  const Shape w_shape = {shape.out_channels, shape.in_channels / shape.groups, shape.kernel_h,
                         shape.kernel_w};
  if (want_x) out.x = Tensor::empty(x_shape, g.dtype(), g.device());
  if (want_weight) out.weight = Tensor::empty(w_shape, g.dtype(), g.device());
  if (want_bias) out.bias = Tensor::empty({shape.out_channels}, g.dtype(), g.device());
  dispatch<kOp>(g.device(), g.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    if (want_x) {
      kernels::conv2d_backward_data(ctx, shape, g.data<T>(), weight.data<T>(), out.x.data<T>());
    }
    if (want_weight) {
      kernels::conv2d_backward_filter(ctx, shape, x.data<T>(), g.data<T>(),
                                      out.weight.data<T>());
    }
    if (want_bias) {
      kernels::ReduceShape rs;
      rs.ndim = 3;
      rs.shape[0] = shape.batch;
      rs.shape[1] = shape.out_channels;
      rs.shape[2] = shape.out_h() * shape.out_w();
      rs.reduce[0] = rs.reduce[2] = true;
      kernels::reduce_sum(ctx, rs, T(1), g.data<T>(), out.bias.data<T>());
    }
  });
  return out;
}

struct Conv2dBackward final : Node {
  kernels::Conv2dShape shape;
  Tensor x, weight;
  bool has_bias = false;
  std::string_view name() const override { return "conv2d"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    const ConvGradients grads = conv_gradients<OpId::conv2d>(
        shape, x, weight, g_in.contiguous(), next_edges[0].active(), next_edges[1].active(),
        has_bias && next_edges[2].active());
    if (has_bias) return {grads.x, grads.weight, grads.bias};
    return {grads.x, grads.weight};
  }
  void release_saved() override { x = weight = Tensor(); }
};

// Edges: x, weight, bias, residual (the last two inactive when undefined).
struct Conv2dFusedBackward final : Node {
  kernels::Conv2dShape shape;
  Activation activation = Activation::none;
  Tensor x, weight;
  Tensor y;  // the output (N, C_out, out_h, out_w), for the activation's mask
  std::string_view name() const override { return "conv2d_fused"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    // The mask read from y equals the one from the pre-activation value: relu passes where
    // y > 0, relu6 where 0 < y < 6 (kernels::unary_backward's rule, given y as its x).
    Tensor g = g_in.contiguous();
    if (activation != Activation::none) {
      const kernels::UnaryOp op =
          activation == Activation::relu ? kernels::UnaryOp::relu : kernels::UnaryOp::relu6;
      Tensor masked = Tensor::empty(y.shape(), y.dtype(), y.device());
      dispatch<OpId::conv2d_fused>(y.device(), y.dtype(), [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::unary_backward(ctx, op, y.numel(), y.data<T>(), y.data<T>(), g.data<T>(),
                                masked.data<T>());
      });
      g = masked;
    }
    ConvGradients grads = conv_gradients<OpId::conv2d_fused>(
        shape, x, weight, g, next_edges[0].active(), next_edges[1].active(),
        next_edges[2].active());
    // The residual enters by a plain add: its gradient is the masked gradient itself.
    Tensor grad_residual = next_edges[3].active() ? g : Tensor();
    return {grads.x, grads.weight, grads.bias, grad_residual};
  }
  void release_saved() override { x = weight = y = Tensor(); }
};

// Checks conv2d's arguments (errors start with `op`) and returns the kernel's shape.
kernels::Conv2dShape conv_shape(const char* op, const Tensor& x, const Tensor& weight,
                                const Tensor& bias, const Conv2dOptions& o) {
  const std::string name(op);
  check_floating(x, op, "x");
  check_floating(weight, op, "weight");
  check_rank(x, 4, op, "x");
  check_rank(weight, 4, op, "weight");
  check_same_device_dtype(x, weight, op);
  if (o.groups < 1 || o.stride_h < 1 || o.stride_w < 1 || o.pad_h < 0 || o.pad_w < 0) {
    throw std::invalid_argument(name + ": stride and groups must be >= 1 and padding >= 0");
  }
  kernels::Conv2dShape s;
  s.batch = x.size(0);
  s.in_channels = x.size(1);
  s.in_h = x.size(2);
  s.in_w = x.size(3);
  s.out_channels = weight.size(0);
  s.kernel_h = weight.size(2);
  s.kernel_w = weight.size(3);
  s.stride_h = o.stride_h;
  s.stride_w = o.stride_w;
  s.pad_h = o.pad_h;
  s.pad_w = o.pad_w;
  s.groups = o.groups;
  if (s.in_channels % s.groups != 0 || s.out_channels % s.groups != 0 ||
      weight.size(1) != s.in_channels / s.groups) {
    throw std::invalid_argument(name + ": input " + shape_str(x.shape()) + " and weight " +
                                shape_str(weight.shape()) + " do not match with groups=" +
                                std::to_string(s.groups) + " (weight must be (C_out, C_in/groups, "
                                "kH, kW) with both channel counts divisible by groups)");
  }
  if (s.in_h + 2 * s.pad_h < s.kernel_h || s.in_w + 2 * s.pad_w < s.kernel_w) {
    throw std::invalid_argument(name + ": kernel " + shape_str(weight.shape()) +
                                " is larger than the padded input " + shape_str(x.shape()));
  }
  if (bias.defined()) {
    check_floating(bias, op, "bias");
    check_same_device_dtype(x, bias, op);
    if (bias.shape() != Shape{s.out_channels}) {
      throw std::invalid_argument(name + ": bias " + shape_str(bias.shape()) + " does not match " +
                                  std::to_string(s.out_channels) + " output channels");
    }
  }
  return s;
}

Shape output_shape(const kernels::Conv2dShape& s) {
  return {s.batch, s.out_channels, s.out_h(), s.out_w()};
}

// y = act(conv(x, weight) + bias + residual) with everything after the conv in its epilogue (as
// each output tile is written); bias and residual may be undefined. x and weight are contiguous;
// y is fresh, so the residual never overlaps it (the kernels' requirement).
template <OpId kOp>
Tensor conv_forward(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& weight,
                    const Tensor& bias, const Tensor& residual, Activation activation) {
  const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  const Tensor r = residual.defined() ? residual.contiguous() : Tensor();
  Tensor y = Tensor::empty(output_shape(s), x.dtype(), x.device());
  dispatch<kOp>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::ConvEpilogue<T> epilogue;
    epilogue.bias = b.defined() ? b.data<T>() : nullptr;
    epilogue.residual = r.defined() ? r.data<T>() : nullptr;
    epilogue.activation = activation == Activation::relu    ? kernels::ConvActivation::relu
                          : activation == Activation::relu6 ? kernels::ConvActivation::relu6
                                                            : kernels::ConvActivation::none;
    kernels::conv2d_forward(ctx, s, x.data<T>(), weight.data<T>(), y.data<T>(), epilogue);
  });
  return y;
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias,
              const Conv2dOptions& o) {
  const kernels::Conv2dShape s = conv_shape("conv2d", x_in, weight_in, bias, o);
  Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  // The bias is added in the conv's epilogue, not in a pass of its own.
  Tensor y = conv_forward<OpId::conv2d>(s, x, weight, bias, Tensor(), Activation::none);
  auto make = [&] {
    auto node = std::make_shared<Conv2dBackward>();
    node->shape = s;
    // Save only what backward needs: x for the filter gradient, the weight for the data gradient.
    if (weight_in.requires_grad()) node->x = x.detach();
    if (x_in.requires_grad()) node->weight = weight.detach();
    node->has_bias = bias.defined();
    return node;
  };
  if (bias.defined()) {
    record<Conv2dBackward>(y, {&x_in, &weight_in, &bias}, make);
  } else {
    record<Conv2dBackward>(y, {&x_in, &weight_in}, make);
  }
  return y;
}

Tensor conv2d_fused(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias,
                    const Tensor& residual_in, Activation activation, const Conv2dOptions& o) {
  const kernels::Conv2dShape s = conv_shape("conv2d_fused", x_in, weight_in, bias, o);
  const Shape y_shape = output_shape(s);
  if (residual_in.defined()) {
    check_floating(residual_in, "conv2d_fused", "residual");
    check_same_device_dtype(x_in, residual_in, "conv2d_fused");
    if (residual_in.shape() != y_shape) {
      throw std::invalid_argument("conv2d_fused: residual " + shape_str(residual_in.shape()) +
                                  " does not match the output " + shape_str(y_shape));
    }
  }
  if (activation != Activation::none && activation != Activation::relu &&
      activation != Activation::relu6) {
    throw std::invalid_argument("conv2d_fused: unknown activation");
  }
  Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  Tensor y = conv_forward<OpId::conv2d_fused>(s, x, weight, bias, residual_in, activation);
  record<Conv2dFusedBackward>(y, {&x_in, &weight_in, &bias, &residual_in}, [&] {
    auto node = std::make_shared<Conv2dFusedBackward>();
    node->shape = s;
    node->activation = activation;
    // As conv2d: x for the filter gradient, the weight for the data gradient; the output only
    // when an activation's mask must be read from it. The bias and residual need nothing.
    if (weight_in.requires_grad()) node->x = x.detach();
    if (x_in.requires_grad()) node->weight = weight.detach();
    if (activation != Activation::none) node->y = y.detach();
    return node;
  });
  return y;
}

}  // namespace retort
