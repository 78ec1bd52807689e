// RAII owners for CUDA resources: streams, events, cuBLAS/cuDNN handles, descriptors, buffers.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"

namespace retort::kernels {

namespace cuda_handles {

// Move-only owner of one handle; the destructor releases it and swallows the status, because a
// destructor must not throw (and during unwinding the context may already be broken).
template <typename Handle, void (*Release)(Handle)>
class Owned {
 public:
  Owned() = default;
  explicit Owned(Handle handle) : handle_(handle) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  Owned(Owned&& other) noexcept : handle_(std::exchange(other.handle_, Handle{})) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, Handle{});
    }
    return *this;
  }
  ~Owned() { reset(); }

  Handle get() const { return handle_; }
  explicit operator bool() const { return handle_ != Handle{}; }
  void reset() noexcept {
    if (handle_ != Handle{}) Release(std::exchange(handle_, Handle{}));
  }

 private:
  Handle handle_{};
};

inline void release_stream(cudaStream_t s) {
  (void)cudaStreamDestroy(s);
}
inline void release_event(cudaEvent_t e) {
  (void)cudaEventDestroy(e);
}
inline void release_cublas(cublasHandle_t h) {
  (void)cublasDestroy(h);
}
inline void release_cudnn(cudnnHandle_t h) {
  (void)cudnnDestroy(h);
}
inline void release_tensor_desc(cudnnTensorDescriptor_t d) {
  (void)cudnnDestroyTensorDescriptor(d);
}
inline void release_filter_desc(cudnnFilterDescriptor_t d) {
  (void)cudnnDestroyFilterDescriptor(d);
}
inline void release_conv_desc(cudnnConvolutionDescriptor_t d) {
  (void)cudnnDestroyConvolutionDescriptor(d);
}
inline void release_device_memory(void* p) {
  (void)cudaFree(p);
}

}  // namespace cuda_handles

// A stream on the current device; non-blocking with respect to the legacy default stream.
class CudaStream {
 public:
  explicit CudaStream(unsigned flags = cudaStreamNonBlocking) {
    cudaStream_t stream = nullptr;
    RETORT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, flags));
    owned_ = Owned(stream);
  }
  cudaStream_t get() const { return owned_.get(); }
  void synchronize() const { RETORT_CUDA_CHECK(cudaStreamSynchronize(get())); }

 private:
  using Owned = cuda_handles::Owned<cudaStream_t, cuda_handles::release_stream>;
  Owned owned_;
};

// An event; timing is on by default because benchmarks time with events.
class CudaEvent {
 public:
  explicit CudaEvent(unsigned flags = cudaEventDefault) {
    cudaEvent_t event = nullptr;
    RETORT_CUDA_CHECK(cudaEventCreateWithFlags(&event, flags));
    owned_ = Owned(event);
  }
  cudaEvent_t get() const { return owned_.get(); }
  void record(cudaStream_t stream) const { RETORT_CUDA_CHECK(cudaEventRecord(get(), stream)); }
  void synchronize() const { RETORT_CUDA_CHECK(cudaEventSynchronize(get())); }
  // Milliseconds from `start` to this event; both must have completed.
  float elapsed_ms_since(const CudaEvent& start) const {
    float ms = 0.0f;
    RETORT_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), get()));
    return ms;
  }

 private:
  using Owned = cuda_handles::Owned<cudaEvent_t, cuda_handles::release_event>;
  Owned owned_;
};

class CublasHandle {
 public:
  CublasHandle() {
    cublasHandle_t handle = nullptr;
    RETORT_CUBLAS_CHECK(cublasCreate(&handle));
    owned_ = Owned(handle);
  }
  cublasHandle_t get() const { return owned_.get(); }

 private:
  using Owned = cuda_handles::Owned<cublasHandle_t, cuda_handles::release_cublas>;
  Owned owned_;
};

class CudnnHandle {
 public:
  CudnnHandle() {
    cudnnHandle_t handle = nullptr;
    RETORT_CUDNN_CHECK(cudnnCreate(&handle));
    owned_ = Owned(handle);
  }
  cudnnHandle_t get() const { return owned_.get(); }

 private:
  using Owned = cuda_handles::Owned<cudnnHandle_t, cuda_handles::release_cudnn>;
  Owned owned_;
};

// A float NCHW (fully packed) tensor descriptor.
class TensorDescriptor {
 public:
  TensorDescriptor() {
    cudnnTensorDescriptor_t desc = nullptr;
    RETORT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc));
    owned_ = Owned(desc);
  }
  cudnnTensorDescriptor_t get() const { return owned_.get(); }
  void set_nchw(int n, int c, int h, int w) {
    RETORT_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w));
  }

 private:
  using Owned = cuda_handles::Owned<cudnnTensorDescriptor_t, cuda_handles::release_tensor_desc>;
  Owned owned_;
};

// A float KCRS (out_channels, in_channels / groups, kernel_h, kernel_w) filter descriptor.
class FilterDescriptor {
 public:
  FilterDescriptor() {
    cudnnFilterDescriptor_t desc = nullptr;
    RETORT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&desc));
    owned_ = Owned(desc);
  }
  cudnnFilterDescriptor_t get() const { return owned_.get(); }
  void set_kcrs(int k, int c, int r, int s) {
    RETORT_CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k, c, r, s));
  }

 private:
  using Owned = cuda_handles::Owned<cudnnFilterDescriptor_t, cuda_handles::release_filter_desc>;
  Owned owned_;
};

// A 2-D cross-correlation (what deep learning calls convolution) with float accumulation.
class ConvolutionDescriptor {
 public:
  ConvolutionDescriptor() {
    cudnnConvolutionDescriptor_t desc = nullptr;
    RETORT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&desc));
    owned_ = Owned(desc);
  }
  cudnnConvolutionDescriptor_t get() const { return owned_.get(); }
  void set_2d(int pad_h, int pad_w, int stride_h, int stride_w, int groups, cudnnMathType_t math) {
    RETORT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        get(), pad_h, pad_w, stride_h, stride_w, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    RETORT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(get(), groups));
    RETORT_CUDNN_CHECK(cudnnSetConvolutionMathType(get(), math));
  }
  void set_math_type(cudnnMathType_t math) {
    RETORT_CUDNN_CHECK(cudnnSetConvolutionMathType(get(), math));
  }

 private:
  using Owned = cuda_handles::Owned<cudnnConvolutionDescriptor_t, cuda_handles::release_conv_desc>;
  Owned owned_;
};

// Device memory from cudaMalloc, for tests, benchmarks and the simple workspace; the engine's
// tensors use its caching allocator instead. Copies here are synchronous.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    void* ptr = nullptr;
    RETORT_CUDA_CHECK(cudaMalloc(&ptr, bytes));
    owned_ = Owned(ptr);
  }
  template <typename T>
  static DeviceBuffer from_host(const std::vector<T>& values) {
    DeviceBuffer buffer(values.size() * sizeof(T));
    if (!values.empty()) {
      RETORT_CUDA_CHECK(
          cudaMemcpy(buffer.data(), values.data(), buffer.bytes(), cudaMemcpyHostToDevice));
    }
    return buffer;
  }
  // The first `count` elements (all of them by default) copied back after a device sync.
  template <typename T>
  std::vector<T> to_host(size_t count = static_cast<size_t>(-1)) const {
    if (count == static_cast<size_t>(-1)) count = bytes_ / sizeof(T);
    std::vector<T> values(count);
    RETORT_CUDA_CHECK(cudaDeviceSynchronize());
    if (count > 0) {
      RETORT_CUDA_CHECK(
          cudaMemcpy(values.data(), data(), count * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return values;
  }

  void* data() const { return owned_.get(); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(owned_.get());
  }
  size_t bytes() const { return bytes_; }

  DeviceBuffer(DeviceBuffer&& other) noexcept
      : owned_(std::move(other.owned_)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    owned_ = std::move(other.owned_);
    bytes_ = std::exchange(other.bytes_, 0);
    return *this;
  }

 private:
  using Owned = cuda_handles::Owned<void*, cuda_handles::release_device_memory>;
  Owned owned_;
  size_t bytes_ = 0;
};

}  // namespace retort::kernels
