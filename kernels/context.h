// Execution contexts passed first to every kernel: the CPU thread budget and the CUDA stream bundle.
#pragma once

#include <cstdint>

namespace retort::kernels {

// CPU kernels run on OpenMP threads; num_threads = 0 means "all available cores".
struct CpuContext {
  int num_threads = 0;
};

// A stream with its cuBLAS/cuDNN handles and workspace; defined in kernels/cuda/context.h so
// that code without CUDA never sees a CUDA header. Every CUDA twin takes it by const reference.
struct CudaContext;

// Largest tensor rank that kernels with explicit shapes/strides accept.
inline constexpr int kMaxDims = 8;

}  // namespace retort::kernels
