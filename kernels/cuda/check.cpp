// Error reporting behind the RETORT_*_CHECK macros and the debug sync-after-launch switch.
#include "kernels/cuda/check.h"

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

namespace retort::kernels::cuda_check {
namespace {

[[noreturn]] void throw_error(const char* library, const char* name, const char* message,
                              const char* expr, const char* file, int line) {
  std::ostringstream out;
  out << library << " error " << name << ": " << message << " in `" << expr << "` at " << file
      << ":" << line;
  throw std::runtime_error(out.str());
}

bool sync_requested_by_environment() {
  const char* value = std::getenv("RETORT_CUDA_SYNC");
  return value != nullptr && std::strcmp(value, "1") == 0;
}

}  // namespace

void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
  throw_error("CUDA", cudaGetErrorName(status), cudaGetErrorString(status), expr, file, line);
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw_error("cuBLAS", cublasGetStatusName(status), cublasGetStatusString(status), expr, file,
              line);
}

void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file, int line) {
  // cudnnGetErrorString gives the status name; cuDNN 9 keeps a more specific message for the
  // last failure on this thread.
  char detail[512] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::string message = "code " + std::to_string(static_cast<int>(status));
  if (detail[0] != '\0') message = std::string(detail) + " (" + message + ")";
  throw_error("cuDNN", cudnnGetErrorString(status), message.c_str(), expr, file, line);
}

bool& cuda_sync_after_launch() {
  static bool enabled = sync_requested_by_environment();
  return enabled;
}

void check_launch(const char* file, int line) {
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess) throw_cuda_error(launch, "kernel launch", file, line);
  if (!cuda_sync_after_launch()) return;
  const cudaError_t done = cudaDeviceSynchronize();
  if (done != cudaSuccess) throw_cuda_error(done, "kernel execution (device sync)", file, line);
}

void check_launch(const char* file, int line, cudaStream_t stream) {
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess) throw_cuda_error(launch, "kernel launch", file, line);
  if (!cuda_sync_after_launch()) return;
  // Synchronising a stream that is being captured into a graph would invalidate the capture.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const cudaError_t query = cudaStreamIsCapturing(stream, &capture);
  if (query != cudaSuccess) throw_cuda_error(query, "cudaStreamIsCapturing", file, line);
  if (capture != cudaStreamCaptureStatusNone) return;
  const cudaError_t done = cudaStreamSynchronize(stream);
  if (done != cudaSuccess) throw_cuda_error(done, "kernel execution (stream sync)", file, line);
}

}  // namespace retort::kernels::cuda_check
