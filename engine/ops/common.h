// Helpers shared by the op implementations: argument checks and node construction.
#pragma once

#include <memory>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/tensor.h"

namespace retort::ops_detail {

// Throws unless t is defined and holds f32/f64.
inline void check_floating(const Tensor& t, const char* op, const char* arg) {
  check_defined(t, op, arg);
  if (!is_floating(t.dtype())) {
    throw std::invalid_argument(std::string(op) + ": argument '" + arg + "' must be f32 or f64, got " +
                                std::string(dtype_name(t.dtype())));
  }
}

inline void check_rank(const Tensor& t, int64_t rank, const char* op, const char* arg) {
  if (t.dim() != rank) {
    throw std::invalid_argument(std::string(op) + ": argument '" + arg + "' must have rank " +
                                std::to_string(rank) + ", got shape " + shape_str(t.shape()));
  }
}

// Records `node` as the grad_fn of `out` when any input needs grad. NodeT is built lazily so
// nothing is saved when no gradient is needed.
template <typename NodeT, typename MakeNode>
void record(const Tensor& out, std::initializer_list<const Tensor*> inputs, MakeNode make) {
  if (!needs_grad(inputs)) return;
  std::shared_ptr<NodeT> node = make();
  attach_node(out, std::move(node), inputs);
}

}  // namespace retort::ops_detail
