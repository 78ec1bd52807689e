// Shapes and strides: small helpers for element counts, contiguous strides, broadcasting, printing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace retort {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
// Row-major strides (in elements) of a contiguous tensor of this shape.
Shape contiguous_strides(const Shape& shape);
// "[64, 3, 32, 32]"
std::string shape_str(const Shape& shape);
// Wraps a possibly negative dimension index into [0, ndim); throws naming the op otherwise.
int wrap_dim(int64_t dim, int64_t ndim, const char* op);
// NumPy broadcasting of two shapes; throws std::invalid_argument naming the op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace retort
