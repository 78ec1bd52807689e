// CUDA twin of kernels/optim.h: the fused SGD step (weight decay, momentum, Nesterov) in one pass.
#include "kernels/optim.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::aligned16;
using cuda_detail::blocks_for;
using cuda_detail::global_thread_index;
using cuda_detail::grid_stride;
using cuda_detail::kThreadsPerBlock;

struct SgdRule {
  float lr, momentum, dampening, weight_decay;
  bool use_momentum, nesterov, first_step;
  const float* lr_scalar;  // read instead of lr when not null (a graph-captured step's schedule)

  __device__ __forceinline__ float learning_rate() const {
    return lr_scalar != nullptr ? *lr_scalar : lr;
  }
  // Updates one parameter (and its momentum slot when use_momentum) as kernels/optim.h states.
  __device__ __forceinline__ void apply(float& param, float grad, float& buf, float lr) const {
    // As the CPU twin and PyTorch: a zero weight decay is skipped, not added as 0 * param.
    float d = weight_decay != 0.0f ? grad + weight_decay * param : grad;
    if (use_momentum) {
      buf = first_step ? d : momentum * buf + (1.0f - dampening) * d;
      d = nesterov ? d + momentum * buf : buf;
    }
    param -= lr * d;
  }
};

template <bool kVec4>
__global__ void sgd_kernel(int64_t n, float* param, const float* __restrict__ grad,
                           float* momentum_buf, SgdRule rule) {
  const float lr = rule.learning_rate();
  int64_t begin = 0;
  if constexpr (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = global_thread_index(); i < n4; i += grid_stride()) {
      float4 p = reinterpret_cast<float4*>(param)[i];
      const float4 g = reinterpret_cast<const float4*>(grad)[i];
      float4 b = rule.use_momentum ? reinterpret_cast<float4*>(momentum_buf)[i] : float4{};
      rule.apply(p.x, g.x, b.x, lr);
      rule.apply(p.y, g.y, b.y, lr);
      rule.apply(p.z, g.z, b.z, lr);
      rule.apply(p.w, g.w, b.w, lr);
      reinterpret_cast<float4*>(param)[i] = p;
      if (rule.use_momentum) reinterpret_cast<float4*>(momentum_buf)[i] = b;
    }
    begin = n4 * 4;
  }
  for (int64_t i = begin + global_thread_index(); i < n; i += grid_stride()) {
    float p = param[i];
    float b = rule.use_momentum ? momentum_buf[i] : 0.0f;
    rule.apply(p, grad[i], b, lr);
    param[i] = p;
    if (rule.use_momentum) momentum_buf[i] = b;
  }
}

// ---- Many tensors per launch --------------------------------------------------------------------
// The slots travel in the kernel's parameter block (nothing is uploaded, so a graph capture can
// record the launch). Block b updates kElementsPerBlock elements of the slot s with
// block_start[s] <= b < block_start[s + 1].
constexpr int kSlotsPerLaunch = 40;  // 40 slots of 40 bytes: well inside the 4 KiB of parameters
constexpr int64_t kElementsPerBlock = 16 * kThreadsPerBlock;
constexpr int64_t kMaxBlocksPerLaunch = int64_t{1} << 20;

struct SgdSlotBatch {
  int32_t count;
  int32_t block_start[kSlotsPerLaunch + 1];
  SgdSlot<float> slots[kSlotsPerLaunch];
};

__global__ void sgd_many_kernel(const __grid_constant__ SgdSlotBatch batch, SgdRule rule) {
  const int32_t block = static_cast<int32_t>(blockIdx.x);
  int s = 0;
  while (s + 1 < batch.count && batch.block_start[s + 1] <= block) ++s;
  const SgdSlot<float>& slot = batch.slots[s];
  rule.first_step = slot.first_step;
  const float lr = rule.learning_rate();
  const int64_t begin = static_cast<int64_t>(block - batch.block_start[s]) * kElementsPerBlock;
  const int64_t end = min(slot.n, begin + kElementsPerBlock);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float p = slot.param[i];
    float b = rule.use_momentum ? slot.momentum_buf[i] : 0.0f;
    rule.apply(p, slot.grad[i], b, lr);
    slot.param[i] = p;
    if (rule.use_momentum) slot.momentum_buf[i] = b;
  }
}

}  // namespace

void sgd_step_many(const CudaContext& ctx, const SgdSlot<float>* slots, int64_t count, float lr,
                   float momentum, float dampening, float weight_decay, bool nesterov,
                   const float* lr_scalar) {
  const bool use_momentum = momentum != 0.0f;
  for (int64_t i = 0; i < count; ++i) {  // before any launch: all or nothing
    if (use_momentum && slots[i].n > 0 && slots[i].momentum_buf == nullptr) {
      throw std::invalid_argument("sgd_step_many (CUDA): momentum != 0 needs a momentum buffer "
                                  "(slot " + std::to_string(i) + ")");
    }
  }
  const SgdRule rule{lr,           momentum, dampening, weight_decay,
                     use_momentum, nesterov, false,     lr_scalar};
  SgdSlotBatch batch{};
  int64_t blocks = 0;
  auto flush = [&] {
    if (batch.count == 0) return;
    batch.block_start[batch.count] = static_cast<int32_t>(blocks);
    sgd_many_kernel<<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, ctx.stream>>>(batch,
                                                                                        rule);
    RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
    batch.count = 0;
    blocks = 0;
  };
  for (int64_t i = 0; i < count; ++i) {
    const SgdSlot<float>& slot = slots[i];
    if (slot.n <= 0) continue;
    const int64_t need = (slot.n + kElementsPerBlock - 1) / kElementsPerBlock;
    if (need > kMaxBlocksPerLaunch) {  // a tensor of billions of elements: a launch of its own
      sgd_step(ctx, slot.n, slot.param, slot.grad, slot.momentum_buf, lr, momentum, dampening,
               weight_decay, nesterov, slot.first_step, lr_scalar);
      continue;
    }
    if (batch.count == kSlotsPerLaunch || blocks + need > kMaxBlocksPerLaunch) flush();
    batch.block_start[batch.count] = static_cast<int32_t>(blocks);
    batch.slots[batch.count++] = slot;
    blocks += need;
  }
  flush();
}

void sgd_step(const CudaContext& ctx, int64_t n, float* param, const float* grad,
              float* momentum_buf, float lr, float momentum, float dampening, float weight_decay,
              bool nesterov, bool first_step, const float* lr_scalar) {
  if (n <= 0) return;
  const bool use_momentum = momentum != 0.0f;
  if (use_momentum && momentum_buf == nullptr) {
    throw std::invalid_argument("sgd_step (CUDA): momentum != 0 needs a momentum buffer");
  }
  const SgdRule rule{lr,       momentum,   dampening, weight_decay,
                     use_momentum, nesterov, first_step, lr_scalar};
  const bool vec4 =
      aligned16(param) && aligned16(grad) && (!use_momentum || aligned16(momentum_buf));
  if (vec4) {
    sgd_kernel<true><<<blocks_for((n + 3) / 4), kThreadsPerBlock, 0, ctx.stream>>>(
        n, param, grad, momentum_buf, rule);
  } else {
    sgd_kernel<false>
        <<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(n, param, grad, momentum_buf, rule);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

}  // namespace retort::kernels
