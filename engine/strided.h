// Strided-view geometry for the copy kernels, shared by Tensor's copies and the view ops.
#pragma once

#include <stdexcept>
#include <string>

#include "engine/tensor.h"
#include "kernels/elementwise.h"

namespace retort {

// t's shape and element strides as the strided copy kernels take them.
inline kernels::StridedShape strided_shape_of(const Tensor& t) {
  if (t.dim() > kernels::kMaxDims) {
    throw std::invalid_argument("tensor rank " + std::to_string(t.dim()) + " exceeds the limit of " +
                                std::to_string(kernels::kMaxDims));
  }
  kernels::StridedShape s;
  s.ndim = static_cast<int>(t.dim());
  for (int d = 0; d < s.ndim; ++d) {
    s.shape[d] = t.shape()[d];
    s.stride[d] = t.strides()[d];
  }
  return s;
}

// The same view with each element seen as `words` 4-byte words (2 for i64, 1 for i32): lets the
// f32 strided copy kernels move integer elements bit for bit on a device (they only load and
// store).
inline kernels::StridedShape as_words(const kernels::StridedShape& s, int words) {
  if (words == 1) return s;
  if (s.ndim + 1 > kernels::kMaxDims) {
    throw std::invalid_argument("strided integer copy: rank " + std::to_string(s.ndim) +
                                " exceeds the limit of " + std::to_string(kernels::kMaxDims - 1));
  }
  kernels::StridedShape w;
  w.ndim = s.ndim + 1;
  for (int d = 0; d < s.ndim; ++d) {
    w.shape[d] = s.shape[d];
    w.stride[d] = words * s.stride[d];
  }
  w.shape[s.ndim] = words;
  w.stride[s.ndim] = 1;
  return w;
}

// 4-byte words per element of an integer dtype the device copy kernels can move (i64, i32), or 0.
inline int words_per_element(DType dtype) {
  if (dtype == DType::i64) return 2;
  if (dtype == DType::i32) return 1;
  return 0;
}

}  // namespace retort
