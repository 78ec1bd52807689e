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

// The same view with each 8-byte element seen as two 4-byte words: lets the f32 strided copy
// kernels move i64 elements bit for bit on a device (they only load and store).
inline kernels::StridedShape as_word_pairs(const kernels::StridedShape& s) {
  if (s.ndim + 1 > kernels::kMaxDims) {
    throw std::invalid_argument("strided i64 copy: rank " + std::to_string(s.ndim) +
                                " exceeds the limit of " + std::to_string(kernels::kMaxDims - 1));
  }
  kernels::StridedShape w;
  w.ndim = s.ndim + 1;
  for (int d = 0; d < s.ndim; ++d) {
    w.shape[d] = s.shape[d];
    w.stride[d] = 2 * s.stride[d];
  }
  w.shape[s.ndim] = 2;
  w.stride[s.ndim] = 1;
  return w;
}

}  // namespace retort
