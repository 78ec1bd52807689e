// Checked CUDA, cuBLAS and cuDNN calls that throw, and the launch check run after every kernel.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

namespace retort::kernels::cuda_check {

// Throw std::runtime_error("<library> error <name>: <message> in `<expr>` at <file>:<line>").
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* expr, const char* file,
                                   int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file,
                                     int line);
[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file,
                                    int line);

// The debug switch: when true, every RETORT_CUDA_CHECK_LAUNCH also synchronises (the stream it
// was given, or the device) so an asynchronous fault is reported at the launch that caused it.
// Starts as (RETORT_CUDA_SYNC=1 in the environment), read once; a test or tool may flip it.
bool& cuda_sync_after_launch();

// cudaGetLastError(), then, with the debug switch on and the stream not being captured into a
// graph, a synchronisation and a second check. The null-stream overload syncs the device.
void check_launch(const char* file, int line);
void check_launch(const char* file, int line, cudaStream_t stream);

}  // namespace retort::kernels::cuda_check

#define RETORT_CUDA_CHECK(expr)                                                                   \
  do {                                                                                            \
    const cudaError_t retort_status_ = (expr);                                                    \
    if (retort_status_ != cudaSuccess) {                                                          \
      ::retort::kernels::cuda_check::throw_cuda_error(retort_status_, #expr, __FILE__, __LINE__); \
    }                                                                                             \
  } while (0)

#define RETORT_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                   \
    const cublasStatus_t retort_status_ = (expr);                                        \
    if (retort_status_ != CUBLAS_STATUS_SUCCESS) {                                       \
      ::retort::kernels::cuda_check::throw_cublas_error(retort_status_, #expr, __FILE__, \
                                                        __LINE__);                       \
    }                                                                                    \
  } while (0)

#define RETORT_CUDNN_CHECK(expr)                                                                   \
  do {                                                                                             \
    const cudnnStatus_t retort_status_ = (expr);                                                   \
    if (retort_status_ != CUDNN_STATUS_SUCCESS) {                                                  \
      ::retort::kernels::cuda_check::throw_cudnn_error(retort_status_, #expr, __FILE__, __LINE__); \
    }                                                                                              \
  } while (0)

// Call right after a kernel launch: RETORT_CUDA_CHECK_LAUNCH(stream), or with no argument (the
// debug sync then covers the whole device).
#define RETORT_CUDA_CHECK_LAUNCH(...) \
  ::retort::kernels::cuda_check::check_launch(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
