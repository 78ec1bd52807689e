// conv2d: shape checks, the forward through kernels/conv.h, bias, and backward for x, w and bias.
#include "kernels/conv.h"

#include "kernels/elementwise.h"
#include "kernels/reduce.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::check_rank;
using ops_detail::record;

struct Conv2dBackward final : Node {
  kernels::Conv2dShape shape;
  Tensor x, weight;
  bool has_bias = false;
  std::string_view name() const override { return "conv2d"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx, gw, gb;
    const Shape x_shape = {shape.batch, shape.in_channels, shape.in_h, shape.in_w};
    const Shape w_shape = {shape.out_channels, shape.in_channels / shape.groups, shape.kernel_h,
                           shape.kernel_w};
    if (next_edges[0].active()) gx = Tensor::empty(x_shape, g.dtype(), g.device());
    if (next_edges[1].active()) gw = Tensor::empty(w_shape, g.dtype(), g.device());
    const bool want_bias = has_bias && next_edges[2].active();
    if (want_bias) gb = Tensor::empty({shape.out_channels}, g.dtype(), g.device());
    dispatch<OpId::conv2d>(g.device(), g.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      if (gx.defined()) {
        kernels::conv2d_backward_data(ctx, shape, g.data<T>(), weight.data<T>(), gx.data<T>());
      }
      if (gw.defined()) {
        kernels::conv2d_backward_filter(ctx, shape, x.data<T>(), g.data<T>(), gw.data<T>());
      }
      if (want_bias) {
        kernels::ReduceShape rs;
        rs.ndim = 3;
        rs.shape[0] = shape.batch;
        rs.shape[1] = shape.out_channels;
        rs.shape[2] = shape.out_h() * shape.out_w();
        rs.reduce[0] = rs.reduce[2] = true;
        kernels::reduce_sum(ctx, rs, T(1), g.data<T>(), gb.data<T>());
      }
    });
    if (has_bias) return {gx, gw, gb};
    return {gx, gw};
  }
  void release_saved() override { x = weight = Tensor(); }
};

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias,
              const Conv2dOptions& o) {
  check_floating(x_in, "conv2d", "x");
  check_floating(weight_in, "conv2d", "weight");
  check_rank(x_in, 4, "conv2d", "x");
  check_rank(weight_in, 4, "conv2d", "weight");
  check_same_device_dtype(x_in, weight_in, "conv2d");
  if (o.groups < 1 || o.stride_h < 1 || o.stride_w < 1 || o.pad_h < 0 || o.pad_w < 0) {
    throw std::invalid_argument("conv2d: stride and groups must be >= 1 and padding >= 0");
  }
  kernels::Conv2dShape s;
  s.batch = x_in.size(0);
  s.in_channels = x_in.size(1);
  s.in_h = x_in.size(2);
  s.in_w = x_in.size(3);
  s.out_channels = weight_in.size(0);
  s.kernel_h = weight_in.size(2);
  s.kernel_w = weight_in.size(3);
  s.stride_h = o.stride_h;
  s.stride_w = o.stride_w;
  s.pad_h = o.pad_h;
  s.pad_w = o.pad_w;
  s.groups = o.groups;
  if (s.in_channels % s.groups != 0 || s.out_channels % s.groups != 0 ||
      weight_in.size(1) != s.in_channels / s.groups) {
    throw std::invalid_argument("conv2d: input " + shape_str(x_in.shape()) + " and weight " +
                                shape_str(weight_in.shape()) + " do not match with groups=" +
                                std::to_string(s.groups) + " (weight must be (C_out, C_in/groups, "
                                "kH, kW) with both channel counts divisible by groups)");
  }
  if (s.in_h + 2 * s.pad_h < s.kernel_h || s.in_w + 2 * s.pad_w < s.kernel_w) {
    throw std::invalid_argument("conv2d: kernel " + shape_str(weight_in.shape()) +
                                " is larger than the padded input " + shape_str(x_in.shape()));
  }
  if (bias.defined()) {
    check_floating(bias, "conv2d", "bias");
    check_same_device_dtype(x_in, bias, "conv2d");
    if (bias.shape() != Shape{s.out_channels}) {
      throw std::invalid_argument("conv2d: bias " + shape_str(bias.shape()) + " does not match " +
                                  std::to_string(s.out_channels) + " output channels");
    }
  }
  Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  Tensor y = Tensor::empty({s.batch, s.out_channels, s.out_h(), s.out_w()}, x.dtype(), x.device());
  dispatch<OpId::conv2d>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::conv2d_forward(ctx, s, x.data<T>(), weight.data<T>(), y.data<T>());
    if (bias.defined()) {
      const Tensor b = bias.contiguous();
      kernels::add_channel_bias(ctx, s.batch, s.out_channels, s.out_h() * s.out_w(),
                                b.data<T>(), y.data<T>());
    }
  });
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

}  // namespace retort
