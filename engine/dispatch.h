// The one dispatch point: which ops exist, which devices run them, and the device/dtype switch.
#pragma once

#include <array>
#include <stdexcept>
#include <string>
#include <string_view>

#include "engine/device.h"
#include "engine/dtype.h"
#include "kernels/context.h"

#if RETORT_WITH_CUDA
#include "engine/cuda/runtime.h"
#endif

namespace retort {

// Every op of the engine. nn/ and distill/ call ops; only ops call kernels, through dispatch().
enum class OpId : uint8_t {
  add, sub, mul, div, affine, neg, exp, log, relu, relu6,
  sum, mean, matmul, linear, conv2d, batch_norm, max_pool2d, avg_pool2d, adaptive_avg_pool2d,
  softmax, log_softmax, cross_entropy, kd_divergence, softmax_entropy,
  reshape, narrow, transpose, copy, fill, random, sgd_step,
  count_
};

struct OpInfo {
  std::string_view name;
  bool differentiable;  // has a backward: must have a gradient check (tests/engine/gradcheck_test)
  bool cpu;             // a CPU twin exists (float and double)
  bool cuda;            // a CUDA twin is wired in (float)
};

inline constexpr std::array<OpInfo, static_cast<size_t>(OpId::count_)> kOpTable = {{
    {"add", true, true, false},
    {"sub", true, true, false},
    {"mul", true, true, false},
    {"div", true, true, false},
    {"affine", true, true, false},
    {"neg", true, true, false},
    {"exp", true, true, false},
    {"log", true, true, false},
    {"relu", true, true, false},
    {"relu6", true, true, false},
    {"sum", true, true, false},
    {"mean", true, true, false},
    {"matmul", true, true, false},
    {"linear", true, true, false},
    {"conv2d", true, true, false},
    {"batch_norm", true, true, false},
    {"max_pool2d", true, true, false},
    {"avg_pool2d", true, true, false},
    {"adaptive_avg_pool2d", true, true, false},
    {"softmax", true, true, false},
    {"log_softmax", true, true, false},
    {"cross_entropy", true, true, false},
    {"kd_divergence", true, true, false},
    {"softmax_entropy", false, true, false},
    {"reshape", true, true, false},
    {"narrow", true, true, false},
    {"transpose", true, true, false},
    {"copy", true, true, false},
    {"fill", false, true, false},
    {"random", false, true, false},
    {"sgd_step", false, true, false},
}};

constexpr const OpInfo& op_info(OpId op) { return kOpTable[static_cast<size_t>(op)]; }

// "Is this supported": true when `op` has a kernel for `device` in this build.
bool supports(OpId op, const Device& device);

// The CPU execution context every CPU kernel receives (thread budget).
const kernels::CpuContext& cpu_context();
// Threads for CPU kernels; 0 means all cores.
void set_num_threads(int threads);

[[noreturn]] void throw_unsupported(OpId op, const Device& device, DType dtype);

// Calls fn(ctx, T{}) with the device's kernel context and the C++ element type for dtype:
// (CpuContext, float), (CpuContext, double) or (CudaContext, float). Anything else, or a
// device the op has no kernel for, is a clear error naming the op: never a silent fallback.
template <OpId kOp, class Fn>
void dispatch(const Device& device, DType dtype, Fn&& fn) {
  static_assert(op_info(kOp).cpu, "every op has a CPU twin: it is the reference");
  if (device.is_cpu()) {
    if (dtype == DType::f32) return fn(cpu_context(), float{});
    if (dtype == DType::f64) return fn(cpu_context(), double{});
    throw_unsupported(kOp, device, dtype);
  }
#if RETORT_WITH_CUDA
  if constexpr (op_info(kOp).cuda) {
    if (dtype == DType::f32) return fn(cuda::context(device.index), float{});
  }
#endif
  throw_unsupported(kOp, device, dtype);
}

}  // namespace retort
