// Elementwise ops with broadcasting: add, sub, mul, div, the scalar affine map and unary maps.
#include "kernels/elementwise.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::record;

kernels::BroadcastShape broadcast_geometry(const Tensor& a, const Tensor& b, const Shape& out) {
  if (static_cast<int>(out.size()) > kernels::kMaxDims) {
    throw std::invalid_argument("broadcast: rank " + std::to_string(out.size()) +
                                " exceeds the limit of " + std::to_string(kernels::kMaxDims));
  }
  kernels::BroadcastShape s;
  s.ndim = static_cast<int>(out.size());
  const Shape sa = contiguous_strides(a.shape()), sb = contiguous_strides(b.shape());
  for (int d = 0; d < s.ndim; ++d) {
    s.shape[d] = out[d];
    const int da = d - (s.ndim - static_cast<int>(a.dim()));
    const int db = d - (s.ndim - static_cast<int>(b.dim()));
    s.stride_a[d] = (da < 0 || a.shape()[da] == 1) ? 0 : sa[da];
    s.stride_b[d] = (db < 0 || b.shape()[db] == 1) ? 0 : sb[db];
  }
  return s;
}

template <OpId kOp>
Tensor binary_raw(const Tensor& a_in, const Tensor& b_in, kernels::BinaryOp op, const char* name) {
  check_floating(a_in, name, "a");
  check_floating(b_in, name, "b");
  check_same_device_dtype(a_in, b_in, name);
  const Shape out_shape = broadcast_shapes(a_in.shape(), b_in.shape(), name);
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  const kernels::BroadcastShape geometry = broadcast_geometry(a, b, out_shape);
  dispatch<kOp>(a.device(), a.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::binary_forward(ctx, op, geometry, a.data<T>(), b.data<T>(), out.data<T>());
  });
  return out;
}

// Gradient nodes of the binary ops; each keeps the input shapes to undo broadcasting.
struct AddBackward final : Node {
  Shape a_shape, b_shape;
  bool negate_b = false;
  std::string_view name() const override { return negate_b ? "sub" : "add"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor gb = sum_to(g, b_shape);
    return {sum_to(g, a_shape), negate_b ? neg(gb) : gb};
  }
};

struct MulBackward final : Node {
  Tensor a, b;
  std::string_view name() const override { return "mul"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor ga, gb;
    if (next_edges[0].active()) ga = sum_to(mul(g, b), a.shape());
    if (next_edges[1].active()) gb = sum_to(mul(g, a), b.shape());
    return {ga, gb};
  }
  void release_saved() override { a = b = Tensor(); }
};

struct DivBackward final : Node {
  Tensor a, b;
  std::string_view name() const override { return "div"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor ga, gb;
    Tensor g_over_b = div(g, b);
    if (next_edges[0].active()) ga = sum_to(g_over_b, a.shape());
    if (next_edges[1].active()) gb = sum_to(neg(mul(g_over_b, div(a, b))), b.shape());
    return {ga, gb};
  }
  void release_saved() override { a = b = Tensor(); }
};

struct AffineBackward final : Node {
  double alpha = 1.0;
  std::string_view name() const override { return "affine"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {affine(g, alpha, 0.0)}; }
};

template <OpId kOp>
struct UnaryBackward final : Node {
  kernels::UnaryOp op;
  Tensor x, y;  // only the one the derivative needs is kept
  explicit UnaryBackward(kernels::UnaryOp op) : op(op) {}
  std::string_view name() const override { return op_info(kOp).name; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    const Tensor& ref = x.defined() ? x : y;
    Tensor grad_x = Tensor::empty(ref.shape(), ref.dtype(), ref.device());
    dispatch<kOp>(ref.device(), ref.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      const T* xp = x.defined() ? x.data<T>() : nullptr;
      const T* yp = y.defined() ? y.data<T>() : nullptr;
      kernels::unary_backward(ctx, op, ref.numel(), xp, yp, g.data<T>(), grad_x.data<T>());
    });
    return {grad_x};
  }
  void release_saved() override { x = y = Tensor(); }
};

template <OpId kOp>
Tensor unary(const Tensor& x_in, kernels::UnaryOp op) {
  const char* name = op_info(kOp).name.data();
  check_floating(x_in, name, "x");
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch<kOp>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::unary_forward(ctx, op, x.numel(), x.data<T>(), y.data<T>());
  });
  record<UnaryBackward<kOp>>(y, {&x_in}, [&] {
    auto node = std::make_shared<UnaryBackward<kOp>>(op);
    // exp's derivative is its output; neg needs nothing; the others need the input.
    if (op == kernels::UnaryOp::exp) {
      node->y = y.detach();
    } else if (op != kernels::UnaryOp::neg) {
      node->x = x.detach();
    } else {
      node->y = y.detach();  // only for shape/dtype/device of the gradient
    }
    return node;
  });
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw<OpId::add>(a, b, kernels::BinaryOp::add, "add");
  record<AddBackward>(out, {&a, &b}, [&] {
    auto node = std::make_shared<AddBackward>();
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    return node;
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw<OpId::sub>(a, b, kernels::BinaryOp::sub, "sub");
  record<AddBackward>(out, {&a, &b}, [&] {
    auto node = std::make_shared<AddBackward>();
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->negate_b = true;
    return node;
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw<OpId::mul>(a, b, kernels::BinaryOp::mul, "mul");
  record<MulBackward>(out, {&a, &b}, [&] {
    auto node = std::make_shared<MulBackward>();
    node->a = a.detach();
    node->b = b.detach();
    return node;
  });
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw<OpId::div>(a, b, kernels::BinaryOp::div, "div");
  record<DivBackward>(out, {&a, &b}, [&] {
    auto node = std::make_shared<DivBackward>();
    node->a = a.detach();
    node->b = b.detach();
    return node;
  });
  return out;
}

Tensor affine(const Tensor& x_in, double alpha, double beta) {
  check_floating(x_in, "affine", "x");
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch<OpId::affine>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::affine_forward(ctx, x.numel(), static_cast<T>(alpha), static_cast<T>(beta),
                            x.data<T>(), y.data<T>());
  });
  record<AffineBackward>(y, {&x_in}, [&] {
    auto node = std::make_shared<AffineBackward>();
    node->alpha = alpha;
    return node;
  });
  return y;
}

Tensor neg(const Tensor& x) { return unary<OpId::neg>(x, kernels::UnaryOp::neg); }
Tensor exp(const Tensor& x) { return unary<OpId::exp>(x, kernels::UnaryOp::exp); }
Tensor log(const Tensor& x) { return unary<OpId::log>(x, kernels::UnaryOp::log); }
Tensor relu(const Tensor& x) { return unary<OpId::relu>(x, kernels::UnaryOp::relu); }
Tensor relu6(const Tensor& x) { return unary<OpId::relu6>(x, kernels::UnaryOp::relu6); }

}  // namespace retort
