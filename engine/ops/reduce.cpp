// Reductions: sum and mean over dimensions, and sum_to (undoing a broadcast).
#include "kernels/reduce.h"

#include <algorithm>

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::record;

// Broadcasts g (the reduced gradient, keepdim-shaped) back to `shape`, times `scale`.
Tensor expand_to(const Tensor& g_keepdim, const Shape& shape, double scale) {
  Tensor zeros = Tensor::zeros(shape, g_keepdim.dtype(), g_keepdim.device());
  Tensor spread = add(zeros, g_keepdim);
  return scale == 1.0 ? spread : affine(spread, scale, 0.0);
}

struct SumBackward final : Node {
  Shape input_shape, keepdim_shape;
  double scale = 1.0;
  bool is_mean = false;
  std::string_view name() const override { return is_mean ? "mean" : "sum"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    return {expand_to(g.reshape(keepdim_shape), input_shape, scale)};
  }
};

template <OpId kOp>
Tensor reduce(const Tensor& x_in, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
  const char* name = is_mean ? "mean" : "sum";
  check_floating(x_in, name, "x");
  const int64_t ndim = x_in.dim();
  if (ndim > kernels::kMaxDims) throw std::invalid_argument(std::string(name) + ": rank too large");
  kernels::ReduceShape rs;
  rs.ndim = static_cast<int>(ndim);
  for (int d = 0; d < rs.ndim; ++d) rs.shape[d] = x_in.shape()[d];
  if (dims.empty()) {
    for (int d = 0; d < rs.ndim; ++d) rs.reduce[d] = true;
  }
  for (int64_t dim : dims) {
    const int d = wrap_dim(dim, ndim, name);
    if (rs.reduce[d]) {
      throw std::invalid_argument(std::string(name) + ": dimension " + std::to_string(dim) +
                                  " is listed twice");
    }
    rs.reduce[d] = true;
  }
  Shape keep_shape, out_shape;
  int64_t count = 1;
  for (int d = 0; d < rs.ndim; ++d) {
    keep_shape.push_back(rs.reduce[d] ? 1 : rs.shape[d]);
    if (rs.reduce[d]) {
      count *= rs.shape[d];
    } else {
      out_shape.push_back(rs.shape[d]);
    }
  }
  if (keepdim) out_shape = keep_shape;
  const double scale = is_mean ? 1.0 / static_cast<double>(std::max<int64_t>(count, 1)) : 1.0;

  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  dispatch<kOp>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::reduce_sum(ctx, rs, static_cast<T>(scale), x.data<T>(), y.data<T>());
  });
  record<SumBackward>(y, {&x_in}, [&] {
    auto node = std::make_shared<SumBackward>();
    node->input_shape = x_in.shape();
    node->keepdim_shape = keep_shape;
    node->scale = scale;
    node->is_mean = is_mean;
    return node;
  });
  return y;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce<OpId::sum>(x, dims, keepdim, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce<OpId::mean>(x, dims, keepdim, true);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  if (lead < 0) {
    throw std::invalid_argument("sum_to: cannot reduce shape " + shape_str(x.shape()) + " to " +
                                shape_str(shape));
  }
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
    } else if (shape[d - lead] == 1 && x.shape()[d] != 1) {
      dims.push_back(d);
    } else if (shape[d - lead] != x.shape()[d]) {
      throw std::invalid_argument("sum_to: cannot reduce shape " + shape_str(x.shape()) + " to " +
                                  shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace retort
