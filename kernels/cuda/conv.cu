// CUDA twin of kernels/conv.h: cuDNN convolutions with algorithms measured once per shape, and
// one hand-written kernel for the forward epilogue.
#include "kernels/conv.h"

#include <algorithm>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/conv_algo_cache.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::aligned16;
using cuda_detail::blocks_for;
using cuda_detail::checked_int;
using cuda_detail::global_thread_index;
using cuda_detail::grid_stride;
using cuda_detail::kThreadsPerBlock;

std::string describe(const Conv2dShape& s) {
  std::ostringstream out;
  out << "x (" << s.batch << ", " << s.in_channels << ", " << s.in_h << ", " << s.in_w << "), w ("
      << s.out_channels << ", " << (s.groups > 0 ? s.in_channels / s.groups : 0) << ", "
      << s.kernel_h << ", " << s.kernel_w << "), stride (" << s.stride_h << ", " << s.stride_w
      << "), pad (" << s.pad_h << ", " << s.pad_w << "), groups " << s.groups;
  return out.str();
}

void validate(const char* op, const Conv2dShape& s) {
  const bool ok = s.batch >= 0 && s.in_channels > 0 && s.in_h > 0 && s.in_w > 0 &&
                  s.out_channels > 0 && s.kernel_h > 0 && s.kernel_w > 0 && s.stride_h > 0 &&
                  s.stride_w > 0 && s.pad_h >= 0 && s.pad_w >= 0 && s.groups > 0 &&
                  s.in_channels % s.groups == 0 && s.out_channels % s.groups == 0 &&
                  s.in_h + 2 * s.pad_h >= s.kernel_h && s.in_w + 2 * s.pad_w >= s.kernel_w;
  if (!ok) throw std::invalid_argument(std::string(op) + " (CUDA): invalid shape " + describe(s));
}

// Descriptors for one convolution in the requested math mode.
std::unique_ptr<ConvPlan> make_plan(const Conv2dShape& s, cudnnMathType_t math) {
  auto plan = std::make_unique<ConvPlan>();
  const int n = checked_int(s.batch, "conv batch");
  plan->x_desc.set_nchw(n, checked_int(s.in_channels, "conv in_channels"),
                        checked_int(s.in_h, "conv in_h"), checked_int(s.in_w, "conv in_w"));
  plan->w_desc.set_kcrs(checked_int(s.out_channels, "conv out_channels"),
                        checked_int(s.in_channels / s.groups, "conv in_channels / groups"),
                        checked_int(s.kernel_h, "conv kernel_h"),
                        checked_int(s.kernel_w, "conv kernel_w"));
  plan->y_desc.set_nchw(n, static_cast<int>(s.out_channels), checked_int(s.out_h(), "conv out_h"),
                        checked_int(s.out_w(), "conv out_w"));
  plan->conv_desc.set_2d(checked_int(s.pad_h, "conv pad_h"), checked_int(s.pad_w, "conv pad_w"),
                         checked_int(s.stride_h, "conv stride_h"),
                         checked_int(s.stride_w, "conv stride_w"),
                         checked_int(s.groups, "conv groups"), math);
  int dims[4] = {};
  RETORT_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(
      plan->conv_desc.get(), plan->x_desc.get(), plan->w_desc.get(), 4, dims));
  if (dims[0] != n || dims[1] != s.out_channels || dims[2] != s.out_h() || dims[3] != s.out_w()) {
    throw std::logic_error("conv (CUDA): cuDNN's output shape (" + std::to_string(dims[2]) + ", " +
                           std::to_string(dims[3]) + ") disagrees with Conv2dShape for " +
                           describe(s));
  }
  plan->math_type = math;
  return plan;
}

// Pointers one direction reads and writes; their meaning is fixed by the direction's traits.
struct ConvOperands {
  const void* in0;
  const void* in1;
  void* out;
};

// Per-direction wrappers over cuDNN's three parallel APIs.
struct ForwardTraits {  // in0 = x, in1 = w, out = y
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  using Algo = cudnnConvolutionFwdAlgo_t;
  static constexpr ConvDirection kDirection = ConvDirection::forward;
  static constexpr int kAlgoCount = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  static constexpr bool kAlwaysDeterministic = false;
  static constexpr const char* kName = "conv2d_forward";
  static int max_count(cudnnHandle_t h) {
    int count = 0;
    RETORT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count));
    return count;
  }
  static cudnnStatus_t workspace_size(cudnnHandle_t h, const ConvPlan& p, Algo algo,
                                      size_t* bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(h, p.x_desc.get(), p.w_desc.get(),
                                                   p.conv_desc.get(), p.y_desc.get(), algo, bytes);
  }
  static void heuristics(cudnnHandle_t h, const ConvPlan& p, int requested, int* returned,
                         Perf* perf) {
    RETORT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p.x_desc.get(), p.w_desc.get(),
                                                              p.conv_desc.get(), p.y_desc.get(),
                                                              requested, returned, perf));
  }
  static void measure(cudnnHandle_t h, const ConvPlan& p, const ConvOperands& o, int requested,
                      int* returned, Perf* perf, void* ws, size_t ws_bytes) {
    RETORT_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
        h, p.x_desc.get(), o.in0, p.w_desc.get(), o.in1, p.conv_desc.get(), p.y_desc.get(), o.out,
        requested, returned, perf, ws, ws_bytes));
  }
  static void run(cudnnHandle_t h, const ConvPlan& p, const ConvOperands& o, void* ws) {
    const float one = 1.0f, zero = 0.0f;
    RETORT_CUDNN_CHECK(cudnnConvolutionForward(
        h, &one, p.x_desc.get(), o.in0, p.w_desc.get(), o.in1, p.conv_desc.get(),
        static_cast<Algo>(p.algo), ws, p.workspace_bytes, &zero, p.y_desc.get(), o.out));
  }
};

struct BackwardDataTraits {  // in0 = grad_y, in1 = w, out = grad_x
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  static constexpr ConvDirection kDirection = ConvDirection::backward_data;
  static constexpr int kAlgoCount = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  static constexpr bool kAlwaysDeterministic = false;
  static constexpr const char* kName = "conv2d_backward_data";
  static int max_count(cudnnHandle_t h) {
    int count = 0;
    RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count));
    return count;
  }
  static cudnnStatus_t workspace_size(cudnnHandle_t h, const ConvPlan& p, Algo algo,
                                      size_t* bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(
        h, p.w_desc.get(), p.y_desc.get(), p.conv_desc.get(), p.x_desc.get(), algo, bytes);
  }
  static void heuristics(cudnnHandle_t h, const ConvPlan& p, int requested, int* returned,
                         Perf* perf) {
    RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        h, p.w_desc.get(), p.y_desc.get(), p.conv_desc.get(), p.x_desc.get(), requested, returned,
        perf));
  }
  static void measure(cudnnHandle_t h, const ConvPlan& p, const ConvOperands& o, int requested,
                      int* returned, Perf* perf, void* ws, size_t ws_bytes) {
    RETORT_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
        h, p.w_desc.get(), o.in1, p.y_desc.get(), o.in0, p.conv_desc.get(), p.x_desc.get(), o.out,
        requested, returned, perf, ws, ws_bytes));
  }
  static void run(cudnnHandle_t h, const ConvPlan& p, const ConvOperands& o, void* ws) {
    const float one = 1.0f, zero = 0.0f;
    RETORT_CUDNN_CHECK(cudnnConvolutionBackwardData(
        h, &one, p.w_desc.get(), o.in1, p.y_desc.get(), o.in0, p.conv_desc.get(),
        static_cast<Algo>(p.algo), ws, p.workspace_bytes, &zero, p.x_desc.get(), o.out));
  }
};

// kernels/conv.h promises a deterministic batch sum for the filter gradient, so this direction
// never takes cuDNN's atomics-based algorithms, whatever CudaContext::deterministic says.
struct BackwardFilterTraits {  // in0 = x, in1 = grad_y, out = grad_w
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  static constexpr ConvDirection kDirection = ConvDirection::backward_filter;
  static constexpr int kAlgoCount = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  static constexpr bool kAlwaysDeterministic = true;
  static constexpr const char* kName = "conv2d_backward_filter";
  static int max_count(cudnnHandle_t h) {
    int count = 0;
    RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count));
    return count;
  }
  static cudnnStatus_t workspace_size(cudnnHandle_t h, const ConvPlan& p, Algo algo,
                                      size_t* bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(
        h, p.x_desc.get(), p.y_desc.get(), p.conv_desc.get(), p.w_desc.get(), algo, bytes);
  }
  static void heuristics(cudnnHandle_t h, const ConvPlan& p, int requested, int* returned,
                         Perf* perf) {
    RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, p.x_desc.get(), p.y_desc.get(), p.conv_desc.get(), p.w_desc.get(), requested, returned,
        perf));
  }
  static void measure(cudnnHandle_t h, const ConvPlan& p, const ConvOperands& o, int requested,
                      int* returned, Perf* perf, void* ws, size_t ws_bytes) {
    RETORT_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        h, p.x_desc.get(), o.in0, p.y_desc.get(), o.in1, p.conv_desc.get(), p.w_desc.get(), o.out,
        requested, returned, perf, ws, ws_bytes));
  }
  static void run(cudnnHandle_t h, const ConvPlan& p, const ConvOperands& o, void* ws) {
    const float one = 1.0f, zero = 0.0f;
    RETORT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
        h, &one, p.x_desc.get(), o.in0, p.y_desc.get(), o.in1, p.conv_desc.get(),
        static_cast<Algo>(p.algo), ws, p.workspace_bytes, &zero, p.w_desc.get(), o.out));
  }
};

// Picks the first candidate (cuDNN lists them fastest or most promising first) that succeeded,
// fits the workspace and, when required, is deterministic; records it in `plan`.
template <typename Traits>
void adopt_first_acceptable(const CudaContext& ctx, const Conv2dShape& s,
                            const std::vector<typename Traits::Perf>& candidates, int returned,
                            size_t workspace_cap, bool need_deterministic, bool measured,
                            ConvPlan& plan) {
  for (int i = 0; i < returned; ++i) {
    const typename Traits::Perf& perf = candidates[static_cast<size_t>(i)];
    if (perf.status != CUDNN_STATUS_SUCCESS || perf.memory > workspace_cap) continue;
    if (need_deterministic && perf.determinism != CUDNN_DETERMINISTIC) continue;
    plan.algo = static_cast<int>(perf.algo);
    // With TF32 off the descriptor stays FMA-only whatever the candidate reports.
    if (ctx.allow_tf32) {
      plan.math_type = perf.mathType;
      plan.conv_desc.set_math_type(perf.mathType);
    }
    size_t bytes = perf.memory;
    if (Traits::workspace_size(ctx.cudnn, plan, perf.algo, &bytes) == CUDNN_STATUS_SUCCESS) {
      bytes = std::max(bytes, perf.memory);
    } else {
      bytes = perf.memory;
    }
    if (bytes > workspace_cap) continue;
    plan.workspace_bytes = bytes;
    plan.measured_ms = measured ? perf.time : -1.0f;
    return;
  }
  throw std::runtime_error(std::string(Traits::kName) + " (CUDA): cuDNN offers no " +
                           (need_deterministic ? "deterministic " : "") +
                           "algorithm within a workspace of " + std::to_string(workspace_cap) +
                           " bytes for " + describe(s));
}

// Measures every algorithm cuDNN can run on this shape (cudnnFind*Ex, which synchronises and
// overwrites the output buffer; the caller is about to overwrite it anyway).
template <typename Traits>
void choose_by_measurement(const CudaContext& ctx, const Conv2dShape& s, const ConvOperands& o,
                           size_t workspace_limit, bool need_deterministic, ConvPlan& plan) {
  size_t workspace_bytes = 0;
  for (int algo = 0; algo < Traits::kAlgoCount; ++algo) {
    size_t bytes = 0;
    if (Traits::workspace_size(ctx.cudnn, plan, static_cast<typename Traits::Algo>(algo), &bytes) ==
            CUDNN_STATUS_SUCCESS &&
        bytes <= workspace_limit) {
      workspace_bytes = std::max(workspace_bytes, bytes);
    }
  }
  void* workspace = workspace_bytes > 0 ? ctx.workspace->get(workspace_bytes) : nullptr;
  const int requested = Traits::max_count(ctx.cudnn);
  std::vector<typename Traits::Perf> candidates(static_cast<size_t>(requested));
  int returned = 0;
  Traits::measure(ctx.cudnn, plan, o, requested, &returned, candidates.data(), workspace,
                  workspace_bytes);
  adopt_first_acceptable<Traits>(ctx, s, candidates, returned, workspace_bytes, need_deterministic,
                                 true, plan);
}

template <typename Traits>
void choose_by_heuristics(const CudaContext& ctx, const Conv2dShape& s, size_t workspace_limit,
                          bool need_deterministic, ConvPlan& plan) {
  const int requested = Traits::max_count(ctx.cudnn);
  std::vector<typename Traits::Perf> candidates(static_cast<size_t>(requested));
  int returned = 0;
  Traits::heuristics(ctx.cudnn, plan, requested, &returned, candidates.data());
  adopt_first_acceptable<Traits>(ctx, s, candidates, returned, workspace_limit, need_deterministic,
                                 false, plan);
}

template <typename Traits>
void run_conv(const CudaContext& ctx, const Conv2dShape& s, const ConvOperands& o) {
  ConvAlgoKey key;
  key.shape = s;
  key.direction = Traits::kDirection;
  key.allow_tf32 = ctx.allow_tf32;
  // The key records the mode (a pinned choice is not a measured one); the algorithm must be
  // deterministic in that mode and always for the directions that promise it.
  key.deterministic = ctx.deterministic;
  const bool need_deterministic = ctx.deterministic || Traits::kAlwaysDeterministic;
  key.workspace_limit = ctx.workspace != nullptr ? ctx.conv_workspace_limit : 0;

  const ConvPlan* plan = ctx.conv_algos != nullptr ? ctx.conv_algos->find(key) : nullptr;
  std::unique_ptr<ConvPlan> uncached;
  if (plan == nullptr) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    RETORT_CUDA_CHECK(cudaStreamIsCapturing(ctx.stream, &capture));
    if (capture != cudaStreamCaptureStatusNone && ctx.conv_algos != nullptr) {
      throw std::logic_error(std::string(Traits::kName) + ": a convolution shape first seen "
                             "inside a CUDA graph capture; run the captured step once eagerly "
                             "first so its algorithms are chosen");
    }
    auto fresh = make_plan(s, ctx.allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
    // Deterministic mode pins the algorithm to cuDNN's heuristic order, which depends only on
    // the shape, the GPU and the library: a timed choice could differ between two runs.
    if (ctx.conv_algos != nullptr && !ctx.deterministic) {
      choose_by_measurement<Traits>(ctx, s, o, key.workspace_limit, need_deterministic, *fresh);
    } else {
      choose_by_heuristics<Traits>(ctx, s, key.workspace_limit, need_deterministic, *fresh);
    }
    if (ctx.conv_algos != nullptr) {
      plan = &ctx.conv_algos->insert(key, std::move(fresh));
    } else {
      uncached = std::move(fresh);
      plan = uncached.get();
    }
  }
  void* workspace = plan->workspace_bytes > 0 ? ctx.workspace->get(plan->workspace_bytes) : nullptr;
  Traits::run(ctx.cudnn, *plan, o, workspace);
}

// ---- Forward epilogue ---------------------------------------------------------------------------
// v = act((v + bias) + residual), written as channel_bias_kernel, BinaryFn<add> and
// UnaryForwardFn<relu/relu6> in elementwise.cu write them, so that the fused result is
// bit-identical to those passes on the device (their relu maps -0 to +0 and lets NaN through).
// A missing step is skipped, not done with a neutral value.
template <ConvActivation kActivation>
__device__ __forceinline__ float conv_epilogue_value(float v, bool has_bias, float bias,
                                                     bool has_residual, float residual) {
  if (has_bias) v += bias;
  if (has_residual) v += residual;
  if constexpr (kActivation == ConvActivation::relu) v = v <= 0.0f ? 0.0f : v;
  if constexpr (kActivation == ConvActivation::relu6) {
    v = v <= 0.0f ? 0.0f : (v >= 6.0f ? 6.0f : v);
  }
  return v;
}

// In place on y (batch, channels, plane). With kVec4, y and residual are 16-byte aligned and
// plane is a multiple of 4, so each float4 lies inside one channel's plane and n % 4 == 0.
template <bool kVec4, ConvActivation kActivation>
__global__ void conv_epilogue_kernel(int64_t n, int64_t channels, int64_t plane,
                                     const float* bias, const float* residual, float* y) {
  const bool has_bias = bias != nullptr, has_residual = residual != nullptr;
  if constexpr (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t q = global_thread_index(); q < n4; q += grid_stride()) {
      const float b = has_bias ? bias[(q * 4 / plane) % channels] : 0.0f;
      const float4 r = has_residual ? reinterpret_cast<const float4*>(residual)[q]
                                    : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      float4 v = reinterpret_cast<const float4*>(y)[q];
      v.x = conv_epilogue_value<kActivation>(v.x, has_bias, b, has_residual, r.x);
      v.y = conv_epilogue_value<kActivation>(v.y, has_bias, b, has_residual, r.y);
      v.z = conv_epilogue_value<kActivation>(v.z, has_bias, b, has_residual, r.z);
      v.w = conv_epilogue_value<kActivation>(v.w, has_bias, b, has_residual, r.w);
      reinterpret_cast<float4*>(y)[q] = v;
    }
  } else {
    for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
      const float b = has_bias ? bias[(i / plane) % channels] : 0.0f;
      const float r = has_residual ? residual[i] : 0.0f;
      y[i] = conv_epilogue_value<kActivation>(y[i], has_bias, b, has_residual, r);
    }
  }
}

template <ConvActivation kActivation>
void launch_conv_epilogue(const CudaContext& ctx, int64_t n, int64_t channels, int64_t plane,
                          const ConvEpilogue<float>& e, float* y) {
  const bool vec4 =
      plane % 4 == 0 && aligned16(y) && (e.residual == nullptr || aligned16(e.residual));
  const unsigned blocks = blocks_for(vec4 ? n / 4 : n);
  if (vec4) {
    conv_epilogue_kernel<true, kActivation>
        <<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, channels, plane, e.bias, e.residual, y);
  } else {
    conv_epilogue_kernel<false, kActivation>
        <<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, channels, plane, e.bias, e.residual, y);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

}  // namespace

// The epilogue is one extra elementwise pass after cuDNN (no host synchronisation, no
// allocation: the whole forward stays capturable in a CUDA graph). cudnnConvolutionBiasActivation-
// Forward is not used: deprecated in cuDNN 9, and it offers neither relu6 nor -0/NaN control.
void conv2d_forward(const CudaContext& ctx, const Conv2dShape& s, const float* x, const float* w,
                    float* y, const ConvEpilogue<float>& epilogue) {
  validate(ForwardTraits::kName, s);
  if (s.batch == 0) return;
  run_conv<ForwardTraits>(ctx, s, ConvOperands{x, w, y});
  if (epilogue.empty()) return;
  const int64_t plane = s.out_h() * s.out_w(), n = s.batch * s.out_channels * plane;
  switch (epilogue.activation) {
    case ConvActivation::none:
      return launch_conv_epilogue<ConvActivation::none>(ctx, n, s.out_channels, plane, epilogue, y);
    case ConvActivation::relu:
      return launch_conv_epilogue<ConvActivation::relu>(ctx, n, s.out_channels, plane, epilogue, y);
    case ConvActivation::relu6:
      return launch_conv_epilogue<ConvActivation::relu6>(ctx, n, s.out_channels, plane, epilogue,
                                                         y);
  }
  throw std::invalid_argument("conv2d_forward (CUDA): unknown ConvActivation");
}

void conv2d_backward_data(const CudaContext& ctx, const Conv2dShape& s, const float* grad_y,
                          const float* w, float* grad_x) {
  validate(BackwardDataTraits::kName, s);
  if (s.batch == 0) return;
  run_conv<BackwardDataTraits>(ctx, s, ConvOperands{grad_y, w, grad_x});
}

void conv2d_backward_filter(const CudaContext& ctx, const Conv2dShape& s, const float* x,
                            const float* grad_y, float* grad_w) {
  validate(BackwardFilterTraits::kName, s);
  if (s.batch == 0) {  // an empty batch contributes nothing: the gradient is zero
    const size_t count =
        static_cast<size_t>(s.out_channels * (s.in_channels / s.groups) * s.kernel_h * s.kernel_w);
    RETORT_CUDA_CHECK(cudaMemsetAsync(grad_w, 0, count * sizeof(float), ctx.stream));
    return;
  }
  run_conv<BackwardFilterTraits>(ctx, s, ConvOperands{x, grad_y, grad_w});
}

}  // namespace retort::kernels
