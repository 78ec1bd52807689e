// Device names, parsing and availability checks.
#include "engine/device.h"

#include <stdexcept>

#include <mutex>

#if RETORT_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/runtime.h"
#endif

namespace retort {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5) {
    size_t used = 0;
    int index = -1;
    try {
      index = std::stoi(text.substr(5), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == text.size() - 5 && index >= 0) return cuda(index);
  }
  throw std::invalid_argument("unknown device '" + text + "' (expected cpu, cuda or cuda:N)");
}

bool cuda_compiled() { return RETORT_WITH_CUDA != 0; }

int cuda_device_count() {
#if RETORT_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error so later checks start clean
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

void require_available(const Device& device) {
  if (device.is_cpu()) return;
  if (!cuda_compiled()) {
    throw std::runtime_error("device " + device.str() +
                             " requested, but this retort was built without CUDA "
                             "(rebuild with -DRETORT_CUDA=ON)");
  }
  const int count = cuda_device_count();
  if (device.index >= count) {
    throw std::runtime_error("device " + device.str() + " requested, but " +
                             (count == 0 ? std::string("no CUDA GPU is present")
                                         : std::to_string(count) + " CUDA GPU(s) are present"));
  }
}

namespace {
std::mutex math_mutex;
CudaMathOptions math_options;
}  // namespace

void set_cuda_math(const CudaMathOptions& options) {
  std::lock_guard<std::mutex> lock(math_mutex);
  math_options = options;
#if RETORT_WITH_CUDA
  cuda::apply_math_options(options);
#endif
}

CudaMathOptions cuda_math() {
  std::lock_guard<std::mutex> lock(math_mutex);
  return math_options;
}

void synchronize(const Device& device) {
  if (device.is_cpu()) return;
  require_available(device);
#if RETORT_WITH_CUDA
  cuda::synchronize(device.index);
#endif
}

}  // namespace retort
