// The CUDA execution context (stream, cuBLAS/cuDNN handles, workspace, modes) and a test owner.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <memory>
#include <string>

#include "kernels/context.h"
#include "kernels/cuda/handles.h"

namespace retort::kernels {

// Scratch device memory for one stream. get(bytes) returns at least `bytes` bytes (nullptr is
// allowed for 0), valid for work enqueued on the context's stream until the next get() on that
// stream; stream order makes reuse by later work safe. Implemented by the engine's caching
// allocator; CudaContextOwner has a simple cudaMalloc-backed one.
class CudaWorkspace {
 public:
  virtual ~CudaWorkspace() = default;
  virtual void* get(size_t bytes) = 0;
};

// Chosen cuDNN convolution algorithms per shape; defined in kernels/cuda/conv_algo_cache.h.
class ConvAlgoCache;

// What every CUDA twin receives. Plain data: it does not own anything, so copying it is cheap;
// whoever builds it keeps the stream, handles, workspace and cache alive.
//
// Contract for the builder: `cublas` and `cudnn` are bound to `stream` (cublasSetStream /
// cudnnSetStream) and cuBLAS is in host pointer mode. Kernels set the cuBLAS math mode and
// workspace on every gemm call, so code that uses the handle directly must set its own.
struct CudaContext {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
  // Null means "no scratch memory": reductions and batch norm run single-pass, cuDNN is limited
  // to algorithms that need no workspace, and cuBLAS uses its own.
  CudaWorkspace* workspace = nullptr;
  // Null means "no autotuning": cuDNN's heuristics choose each call and nothing is measured.
  ConvAlgoCache* conv_algos = nullptr;
  // TF32 tensor cores for GEMMs and convolutions; off gives exact fp32 (FMA-only cuDNN kernels,
  // CUBLAS_DEFAULT_MATH).
  bool allow_tf32 = true;
  // Restrict cuDNN to deterministic algorithms. (Every hand-written kernel here is deterministic
  // regardless, and conv backward-filter always is, as kernels/conv.h promises.)
  bool deterministic = false;
  // Upper bound on the workspace one cuDNN convolution may take.
  size_t conv_workspace_limit = size_t{256} << 20;
};

// True when a CUDA device can be used; otherwise false with the runtime's reason in *reason.
bool cuda_device_available(std::string* reason = nullptr);

// A workspace that grows by cudaMalloc and never shrinks. Growing synchronises the stream first,
// so work still using the old buffer finishes before it is freed.
class SimpleCudaWorkspace final : public CudaWorkspace {
 public:
  explicit SimpleCudaWorkspace(cudaStream_t stream) : stream_(stream) {}
  void* get(size_t bytes) override;
  size_t capacity() const { return buffer_.bytes(); }

 private:
  cudaStream_t stream_;
  DeviceBuffer buffer_;
};

// Owns a stream, bound cuBLAS and cuDNN handles, a SimpleCudaWorkspace and a ConvAlgoCache, and
// hands out the CudaContext that points at them. For tests and benchmarks; the engine builds its
// own contexts from its device state. Move-only; moving keeps context() valid.
class CudaContextOwner {
 public:
  CudaContextOwner();
  ~CudaContextOwner();
  CudaContextOwner(CudaContextOwner&&) noexcept;
  CudaContextOwner& operator=(CudaContextOwner&&) noexcept;
  CudaContextOwner(const CudaContextOwner&) = delete;
  CudaContextOwner& operator=(const CudaContextOwner&) = delete;

  const CudaContext& context() const { return context_; }
  // For flipping allow_tf32 / deterministic; the handles and pointers must stay as they are.
  CudaContext& mutable_context() { return context_; }
  ConvAlgoCache& conv_algos() { return *conv_algos_; }
  void synchronize() const { stream_.synchronize(); }

 private:
  CudaStream stream_;
  CublasHandle cublas_;
  CudnnHandle cudnn_;
  std::unique_ptr<SimpleCudaWorkspace> workspace_;
  std::unique_ptr<ConvAlgoCache> conv_algos_;
  CudaContext context_;
};

}  // namespace retort::kernels
