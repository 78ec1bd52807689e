// The one dispatch point: which ops exist, which devices run them, and the device/dtype switch.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
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
  sum, mean, matmul, linear, conv2d, conv2d_fused, batch_norm, batch_norm_relu, batch_norm_add_relu,
  max_pool2d, avg_pool2d,
  adaptive_avg_pool2d,
  softmax, log_softmax, cross_entropy, kd_divergence, softmax_entropy,
  reshape, narrow, transpose, copy, fill, random, sgd_step, count_top1, augment,
  count_
};

struct OpInfo {
  std::string_view name;
  bool differentiable;  // has a backward: must have a gradient check (tests/engine/gradcheck_test)
  bool cpu;             // a CPU twin exists (float and double)
  bool cuda;            // a CUDA twin is wired in (float)
};

inline constexpr std::array<OpInfo, static_cast<size_t>(OpId::count_)> kOpTable = {{
    {"add", true, true, true},
    {"sub", true, true, true},
    {"mul", true, true, true},
    {"div", true, true, true},
    {"affine", true, true, true},
    {"neg", true, true, true},
    {"exp", true, true, true},
    {"log", true, true, true},
    {"relu", true, true, true},
    {"relu6", true, true, true},
    {"sum", true, true, true},
    {"mean", true, true, true},
    {"matmul", true, true, true},
    {"linear", true, true, true},
    {"conv2d", true, true, true},
    {"conv2d_fused", true, true, true},
    {"batch_norm", true, true, true},
    {"batch_norm_relu", true, true, true},
    {"batch_norm_add_relu", true, true, true},
    {"max_pool2d", true, true, true},
    {"avg_pool2d", true, true, true},
    {"adaptive_avg_pool2d", true, true, true},
    {"softmax", true, true, true},
    {"log_softmax", true, true, true},
    {"cross_entropy", true, true, true},
    {"kd_divergence", true, true, true},
    {"softmax_entropy", false, true, true},
    {"reshape", true, true, true},
    {"narrow", true, true, true},
    {"transpose", true, true, true},
    {"copy", true, true, true},
    {"fill", false, true, true},
    {"random", false, true, true},
    {"sgd_step", false, true, true},
    {"count_top1", false, true, true},
    {"augment", false, true, true},
}};

constexpr const OpInfo& op_info(OpId op) { return kOpTable[static_cast<size_t>(op)]; }

// "Is this supported": true when `op` has a kernel for `device` in this build.
bool supports(OpId op, const Device& device);

// The CPU execution context every CPU kernel receives (thread budget).
const kernels::CpuContext& cpu_context();
// Threads for CPU kernels; 0 means all cores.
void set_num_threads(int threads);

[[noreturn]] void throw_unsupported(OpId op, const Device& device, DType dtype);

namespace dispatch_detail {
inline std::atomic<uint64_t> dispatches{0};
}  // namespace dispatch_detail

// How many times ops have been dispatched to a kernel context since the process started, on
// all threads (a forward op or a backward node counts once, however many kernels it runs):
// the step benchmark's ops per step.
inline uint64_t dispatch_count() {
  return dispatch_detail::dispatches.load(std::memory_order_relaxed);
}

// Calls fn(ctx, T{}) with the device's kernel context and the C++ element type for dtype:
// (CpuContext, float), (CpuContext, double) or (CudaContext, float). Anything else, or a
// device the op has no kernel for, is a clear error naming the op: never a silent fallback.
template <OpId kOp, class Fn>
void dispatch(const Device& device, DType dtype, Fn&& fn) {
  static_assert(op_info(kOp).cpu, "every op has a CPU twin: it is the reference");
  dispatch_detail::dispatches.fetch_add(1, std::memory_order_relaxed);
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
