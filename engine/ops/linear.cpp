// Matrix products: matmul and linear (x weight^T + bias), with their backward GEMMs.
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/reduce.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::check_rank;
using ops_detail::record;

// c (m x n) = op(a) * op(b), row-major, contiguous operands.
template <OpId kOp>
Tensor gemm_new(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, int64_t m, int64_t n,
                int64_t k) {
  Tensor c = Tensor::empty({m, n}, a.dtype(), a.device());
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  dispatch<kOp>(a.device(), a.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm(ctx, trans_a, trans_b, m, n, k, T(1), a.data<T>(), lda, b.data<T>(), ldb, T(0),
                  c.data<T>(), n);
  });
  return c;
}

struct MatmulBackward final : Node {
  Tensor a, b;
  std::string_view name() const override { return "matmul"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
    Tensor ga, gb;
    if (next_edges[0].active()) ga = gemm_new<OpId::matmul>(g, false, b, true, m, k, n);
    if (next_edges[1].active()) gb = gemm_new<OpId::matmul>(a, true, g, false, k, n, m);
    return {ga, gb};
  }
  void release_saved() override { a = b = Tensor(); }
};

struct LinearBackward final : Node {
  Tensor x, weight;
  std::string_view name() const override { return "linear"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    const int64_t batch = x.size(0), in = x.size(1), out = weight.size(0);
    Tensor gx, gw, gb;
    if (next_edges[0].active()) gx = gemm_new<OpId::linear>(g, false, weight, false, batch, in, out);
    if (next_edges[1].active()) gw = gemm_new<OpId::linear>(g, true, x, false, out, in, batch);
    if (next_edges.size() > 2 && next_edges[2].active()) {
      gb = Tensor::empty({out}, g.dtype(), g.device());
      kernels::ReduceShape rs;
      rs.ndim = 2;
      rs.shape[0] = batch;
      rs.shape[1] = out;
      rs.reduce[0] = true;
      dispatch<OpId::linear>(g.device(), g.dtype(), [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::reduce_sum(ctx, rs, T(1), g.data<T>(), gb.data<T>());
      });
    }
    if (next_edges.size() > 2) return {gx, gw, gb};
    return {gx, gw};
  }
  void release_saved() override { x = weight = Tensor(); }
};

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  check_floating(a_in, "matmul", "a");
  check_floating(b_in, "matmul", "b");
  check_rank(a_in, 2, "matmul", "a");
  check_rank(b_in, 2, "matmul", "b");
  check_same_device_dtype(a_in, b_in, "matmul");
  if (a_in.size(1) != b_in.size(0)) {
    throw std::invalid_argument("matmul: inner dimensions differ: " + shape_str(a_in.shape()) +
                                " x " + shape_str(b_in.shape()));
  }
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  Tensor c = gemm_new<OpId::matmul>(a, false, b, false, a.size(0), b.size(1), a.size(1));
  record<MatmulBackward>(c, {&a_in, &b_in}, [&] {
    auto node = std::make_shared<MatmulBackward>();
    node->a = a.detach();
    node->b = b.detach();
    return node;
  });
  return c;
}

Tensor linear(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias) {
  check_floating(x_in, "linear", "x");
  check_floating(weight_in, "linear", "weight");
  check_rank(x_in, 2, "linear", "x");
  check_rank(weight_in, 2, "linear", "weight");
  check_same_device_dtype(x_in, weight_in, "linear");
  if (x_in.size(1) != weight_in.size(1)) {
    throw std::invalid_argument("linear: input " + shape_str(x_in.shape()) +
                                " does not match weight " + shape_str(weight_in.shape()) +
                                " (expected input features " + std::to_string(weight_in.size(1)) +
                                ")");
  }
  const int64_t out_features = weight_in.size(0);
  if (bias.defined()) {
    check_floating(bias, "linear", "bias");
    check_same_device_dtype(x_in, bias, "linear");
    if (bias.shape() != Shape{out_features}) {
      throw std::invalid_argument("linear: bias " + shape_str(bias.shape()) + " does not match " +
                                  std::to_string(out_features) + " output features");
    }
  }
  Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  Tensor y = gemm_new<OpId::linear>(x, false, weight, true, x.size(0), out_features, x.size(1));
  if (bias.defined()) {
    Tensor b = bias.contiguous();
    kernels::BroadcastShape s;
    s.ndim = 2;
    s.shape[0] = y.size(0);
    s.shape[1] = out_features;
    s.stride_a[0] = out_features;
    s.stride_a[1] = 1;
    s.stride_b[1] = 1;
    dispatch<OpId::linear>(y.device(), y.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::binary_forward(ctx, kernels::BinaryOp::add, s, y.data<T>(), b.data<T>(),
                              y.data<T>());
    });
  }
  auto make = [&] {
    auto node = std::make_shared<LinearBackward>();
    node->x = x.detach();
    node->weight = weight.detach();
    return node;
  };
  if (bias.defined()) {
    record<LinearBackward>(y, {&x_in, &weight_in, &bias}, make);
  } else {
    record<LinearBackward>(y, {&x_in, &weight_in}, make);
  }
  return y;
}

}  // namespace retort
