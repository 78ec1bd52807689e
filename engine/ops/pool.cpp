// Pooling ops: max (with argmax for backward), average, adaptive and global average.
#include "kernels/pool.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::check_rank;
using ops_detail::record;

kernels::Pool2dShape pool_geometry(const Tensor& x, const Pool2dOptions& o, const char* op) {
  check_floating(x, op, "x");
  check_rank(x, 4, op, "x");
  if (o.kernel_h < 1 || o.kernel_w < 1 || o.stride_h < 1 || o.stride_w < 1 || o.pad_h < 0 ||
      o.pad_w < 0) {
    throw std::invalid_argument(std::string(op) + ": kernel and stride must be >= 1, padding >= 0");
  }
  if (2 * o.pad_h > o.kernel_h || 2 * o.pad_w > o.kernel_w) {
    throw std::invalid_argument(std::string(op) + ": padding must be at most half the kernel size");
  }
  kernels::Pool2dShape s;
  s.batch = x.size(0);
  s.channels = x.size(1);
  s.in_h = x.size(2);
  s.in_w = x.size(3);
  s.kernel_h = o.kernel_h;
  s.kernel_w = o.kernel_w;
  s.stride_h = o.stride_h;
  s.stride_w = o.stride_w;
  s.pad_h = o.pad_h;
  s.pad_w = o.pad_w;
  s.ceil_mode = o.ceil_mode;
  if (s.in_h + 2 * s.pad_h < s.kernel_h || s.in_w + 2 * s.pad_w < s.kernel_w || s.out_h() < 1 ||
      s.out_w() < 1) {
    throw std::invalid_argument(std::string(op) + ": kernel " + std::to_string(o.kernel_h) + "x" +
                                std::to_string(o.kernel_w) + " does not fit input " +
                                shape_str(x.shape()));
  }
  return s;
}

struct MaxPoolBackward final : Node {
  kernels::Pool2dShape shape;
  Tensor argmax;
  DType dtype = DType::f32;
  std::string_view name() const override { return "max_pool2d"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty({shape.batch, shape.channels, shape.in_h, shape.in_w}, g.dtype(),
                              g.device());
    dispatch<OpId::max_pool2d>(g.device(), g.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::max_pool2d_backward(ctx, shape, g.data<T>(), argmax.data<int32_t>(), gx.data<T>());
    });
    return {gx};
  }
  void release_saved() override { argmax = Tensor(); }
};

struct AvgPoolBackward final : Node {
  kernels::Pool2dShape shape;
  bool count_include_pad = true;
  std::string_view name() const override { return "avg_pool2d"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty({shape.batch, shape.channels, shape.in_h, shape.in_w}, g.dtype(),
                              g.device());
    dispatch<OpId::avg_pool2d>(g.device(), g.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::avg_pool2d_backward(ctx, shape, count_include_pad, g.data<T>(), gx.data<T>());
    });
    return {gx};
  }
};

struct AdaptiveAvgPoolBackward final : Node {
  kernels::AdaptivePool2dShape shape;
  std::string_view name() const override { return "adaptive_avg_pool2d"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty({shape.batch, shape.channels, shape.in_h, shape.in_w}, g.dtype(),
                              g.device());
    dispatch<OpId::adaptive_avg_pool2d>(g.device(), g.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::adaptive_avg_pool2d_backward(ctx, shape, g.data<T>(), gx.data<T>());
    });
    return {gx};
  }
};

}  // namespace

Tensor max_pool2d(const Tensor& x_in, const Pool2dOptions& options) {
  const kernels::Pool2dShape s = pool_geometry(x_in, options, "max_pool2d");
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({s.batch, s.channels, s.out_h(), s.out_w()}, x.dtype(), x.device());
  Tensor argmax = Tensor::empty(y.shape(), DType::i32, x.device());
  dispatch<OpId::max_pool2d>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::max_pool2d_forward(ctx, s, x.data<T>(), y.data<T>(), argmax.data<int32_t>());
  });
  record<MaxPoolBackward>(y, {&x_in}, [&] {
    auto node = std::make_shared<MaxPoolBackward>();
    node->shape = s;
    node->argmax = argmax;
    return node;
  });
  return y;
}

Tensor avg_pool2d(const Tensor& x_in, const Pool2dOptions& options) {
  const kernels::Pool2dShape s = pool_geometry(x_in, options, "avg_pool2d");
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({s.batch, s.channels, s.out_h(), s.out_w()}, x.dtype(), x.device());
  dispatch<OpId::avg_pool2d>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::avg_pool2d_forward(ctx, s, options.count_include_pad, x.data<T>(), y.data<T>());
  });
  record<AvgPoolBackward>(y, {&x_in}, [&] {
    auto node = std::make_shared<AvgPoolBackward>();
    node->shape = s;
    node->count_include_pad = options.count_include_pad;
    return node;
  });
  return y;
}

Tensor adaptive_avg_pool2d(const Tensor& x_in, int64_t out_h, int64_t out_w) {
  check_floating(x_in, "adaptive_avg_pool2d", "x");
  check_rank(x_in, 4, "adaptive_avg_pool2d", "x");
  if (out_h < 1 || out_w < 1) {
    throw std::invalid_argument("adaptive_avg_pool2d: output size must be >= 1");
  }
  kernels::AdaptivePool2dShape s;
  s.batch = x_in.size(0);
  s.channels = x_in.size(1);
  s.in_h = x_in.size(2);
  s.in_w = x_in.size(3);
  s.out_h = out_h;
  s.out_w = out_w;
  if (s.in_h < 1 || s.in_w < 1) {
    throw std::invalid_argument("adaptive_avg_pool2d: empty input " + shape_str(x_in.shape()));
  }
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({s.batch, s.channels, out_h, out_w}, x.dtype(), x.device());
  dispatch<OpId::adaptive_avg_pool2d>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::adaptive_avg_pool2d_forward(ctx, s, x.data<T>(), y.data<T>());
  });
  record<AdaptiveAvgPoolBackward>(y, {&x_in}, [&] {
    auto node = std::make_shared<AdaptiveAvgPoolBackward>();
    node->shape = s;
    return node;
  });
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  return adaptive_avg_pool2d(x, 1, 1).flatten(1);
}

}  // namespace retort
