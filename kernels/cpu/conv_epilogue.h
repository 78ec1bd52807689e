// The CPU conv2d epilogue (bias, residual, activation) applied to one channel's run of outputs.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/conv.h"

namespace retort::kernels::cpu_detail {

// y[i] = act((y[i] + bias) + residual[i]) for i < count, each step rounded to T. The steps and
// the activations are written exactly as add_channel_bias, binary add and unary relu/relu6 in
// kernels/cpu/elementwise.cpp write them (relu lets NaN and -0 through; relu6 is min(max(v, 0), 6)
// with std's argument order, which does the same), so the fused result is bit-identical to them.
// A missing step is skipped rather than done with a neutral value: y + 0 would turn -0 into +0.
template <typename T, bool kBias, bool kResidual, ConvActivation kActivation>
void conv_epilogue_run(T bias, const T* __restrict residual, T* __restrict y, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    T v = y[i];
    if constexpr (kBias) v += bias;
    if constexpr (kResidual) v += residual[i];
    if constexpr (kActivation == ConvActivation::relu) v = v < T(0) ? T(0) : v;
    if constexpr (kActivation == ConvActivation::relu6) v = std::min(std::max(v, T(0)), T(6));
    y[i] = v;
  }
}

// Picks the specialisation of conv_epilogue_run once per convolution; apply() then finishes a run
// of outputs of one channel while the conv's tile is still in cache.
template <typename T>
class ConvEpilogueApplier {
 public:
  explicit ConvEpilogueApplier(const ConvEpilogue<T>& e) : epilogue_(e) {
    switch (e.activation) {
      case ConvActivation::none:
        run_ = pick<ConvActivation::none>();
        break;
      case ConvActivation::relu:
        run_ = pick<ConvActivation::relu>();
        break;
      case ConvActivation::relu6:
        run_ = pick<ConvActivation::relu6>();
        break;
    }
  }
  bool empty() const { return epilogue_.empty(); }
  // Outputs [offset, offset + count) of y, all in output channel `channel`.
  void apply(int64_t channel, int64_t offset, int64_t count, T* y) const {
    const T bias = epilogue_.bias != nullptr ? epilogue_.bias[channel] : T(0);
    const T* residual = epilogue_.residual != nullptr ? epilogue_.residual + offset : nullptr;
    run_(bias, residual, y + offset, count);
  }

 private:
  using Run = void (*)(T, const T*, T*, int64_t);
  template <ConvActivation kActivation>
  Run pick() const {
    const bool bias = epilogue_.bias != nullptr, residual = epilogue_.residual != nullptr;
    if (bias && residual) return conv_epilogue_run<T, true, true, kActivation>;
    if (bias) return conv_epilogue_run<T, true, false, kActivation>;
    if (residual) return conv_epilogue_run<T, false, true, kActivation>;
    return conv_epilogue_run<T, false, false, kActivation>;
  }

  ConvEpilogue<T> epilogue_;
  Run run_ = nullptr;
};

}  // namespace retort::kernels::cpu_detail
