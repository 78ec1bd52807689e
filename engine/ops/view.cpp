// Differentiable views and copies: reshape, flatten, narrow, transpose, contiguous, clone.
#include "kernels/elementwise.h"

#include "engine/ops/common.h"
#include "engine/strided.h"

namespace retort {
namespace {

using ops_detail::record;

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

struct ReshapeBackward final : Node {
  Shape input_shape;
  std::string_view name() const override { return "reshape"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g.reshape(input_shape)}; }
};

struct NarrowBackward final : Node {
  Shape input_shape;
  int64_t dim = 0, start = 0, length = 0;
  std::string_view name() const override { return "narrow"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor full = Tensor::zeros(input_shape, g.dtype(), g.device());
    Tensor slot = full.narrow(dim, start, length);
    slot.copy_(g);
    return {full};
  }
};

struct TransposeBackward final : Node {
  int64_t dim0 = 0, dim1 = 0;
  std::string_view name() const override { return "transpose"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g.transpose(dim0, dim1)}; }
};

struct CopyBackward final : Node {
  std::string_view name() const override { return "copy"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g}; }
};

// A contiguous copy of x (any strides) without recording anything.
Tensor copy_contiguous(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_contiguous()) {
    copy_bytes(out.raw_data(), out.device(), x.raw_data(), x.device(),
               static_cast<size_t>(x.numel()) * dtype_size(x.dtype()));
    return out;
  }
  const kernels::StridedShape s = strided_shape_of(x);
  if (x.device().is_cpu() && !is_floating(x.dtype())) {
    const auto& ctx = cpu_context();
    switch (x.dtype()) {
      case DType::i64: kernels::strided_copy(ctx, s, x.data<int64_t>(), out.data<int64_t>()); break;
      case DType::i32: kernels::strided_copy(ctx, s, x.data<int32_t>(), out.data<int32_t>()); break;
      case DType::u8: kernels::strided_copy(ctx, s, x.data<uint8_t>(), out.data<uint8_t>()); break;
      default: break;
    }
    return out;
  }
  if (const int words = words_per_element(x.dtype()); words > 0) {
    // Integers on a device: moved as 32-bit words by the f32 copy kernel, bit for bit.
    dispatch<OpId::copy>(x.device(), DType::f32, [&](const auto& ctx, auto) {
      kernels::strided_copy(ctx, as_words(s, words), static_cast<const float*>(x.raw_data()),
                            static_cast<float*>(out.raw_data()));
    });
    return out;
  }
  dispatch<OpId::copy>(x.device(), x.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::strided_copy(ctx, s, x.data<T>(), out.data<T>());
  });
  return out;
}

}  // namespace

Tensor Tensor::reshape(const Shape& new_shape_in) const {
  Shape new_shape = new_shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < new_shape.size(); ++i) {
    if (new_shape[i] == -1) {
      if (infer >= 0) throw std::invalid_argument("reshape: only one dimension can be -1");
      infer = static_cast<int64_t>(i);
    } else {
      known *= new_shape[i];
    }
  }
  if (infer >= 0 && known > 0 && numel() % known == 0) new_shape[infer] = numel() / known;
  if (shape_numel(new_shape) != numel() || (infer >= 0 && known == 0)) {
    throw std::invalid_argument("reshape: cannot view shape " + shape_str(shape()) + " (" +
                                std::to_string(numel()) + " elements) as " +
                                shape_str(new_shape_in));
  }
  // The copy (if any) is not recorded: the reshape node below routes the gradient to *this.
  Tensor base = is_contiguous() ? *this : copy_contiguous(*this);
  Tensor out = make_view(base, new_shape, contiguous_strides(new_shape), base.offset());
  record<ReshapeBackward>(out, {this}, [&] {
    auto node = std::make_shared<ReshapeBackward>();
    node->input_shape = shape();
    return node;
  });
  return out;
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  const int s = wrap_dim(start_dim, dim(), "flatten"), e = wrap_dim(end_dim, dim(), "flatten");
  if (s > e) throw std::invalid_argument("flatten: start_dim must not come after end_dim");
  Shape out;
  for (int d = 0; d < s; ++d) out.push_back(shape()[d]);
  int64_t merged = 1;
  for (int d = s; d <= e; ++d) merged *= shape()[d];
  out.push_back(merged);
  for (int64_t d = e + 1; d < dim(); ++d) out.push_back(shape()[d]);
  return reshape(out);
}

Tensor Tensor::narrow(int64_t dim_in, int64_t start, int64_t length) const {
  const int d = wrap_dim(dim_in, dim(), "narrow");
  if (start < 0 || length < 0 || start + length > shape()[d]) {
    throw std::invalid_argument("narrow: range [" + std::to_string(start) + ", " +
                                std::to_string(start + length) + ") is outside dimension " +
                                std::to_string(d) + " of size " + std::to_string(shape()[d]));
  }
  Shape new_shape = shape();
  new_shape[d] = length;
  Tensor out = make_view(*this, new_shape, strides(), offset() + start * strides()[d]);
  record<NarrowBackward>(out, {this}, [&] {
    auto node = std::make_shared<NarrowBackward>();
    node->input_shape = shape();
    node->dim = d;
    node->start = start;
    node->length = length;
    return node;
  });
  return out;
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  const int a = wrap_dim(dim0, dim(), "transpose"), b = wrap_dim(dim1, dim(), "transpose");
  Shape new_shape = shape(), new_strides = strides();
  std::swap(new_shape[a], new_shape[b]);
  std::swap(new_strides[a], new_strides[b]);
  Tensor out = make_view(*this, new_shape, new_strides, offset());
  record<TransposeBackward>(out, {this}, [&] {
    auto node = std::make_shared<TransposeBackward>();
    node->dim0 = a;
    node->dim1 = b;
    return node;
  });
  return out;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = copy_contiguous(*this);
  record<CopyBackward>(out, {this}, [] { return std::make_shared<CopyBackward>(); });
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = copy_contiguous(*this);
  record<CopyBackward>(out, {this}, [] { return std::make_shared<CopyBackward>(); });
  return out;
}

}  // namespace retort
