// Storage lifetime, the CPU allocator, and byte copies between devices.
#include "engine/storage.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#if RETORT_WITH_CUDA
#include "engine/cuda/runtime.h"
#endif

namespace retort {
namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* ptr, size_t) noexcept override { std::free(ptr); }
};

}  // namespace

Allocator& allocator_for(const Device& device) {
  static CpuAllocator cpu;
  if (device.is_cpu()) return cpu;
  require_available(device);
#if RETORT_WITH_CUDA
  return cuda::device_allocator(device.index);
#else
  throw std::logic_error("unreachable: CUDA device passed require_available in a CPU build");
#endif
}

Storage::Storage(size_t bytes, Device device)
    : bytes_(bytes), device_(device), allocator_(&allocator_for(device)) {
  data_ = allocator_->allocate(bytes);
}

Storage::~Storage() {
  if (data_ != nullptr) allocator_->deallocate(data_, bytes_);
}

void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if RETORT_WITH_CUDA
  cuda::copy_bytes(dst, dst_device, src, src_device, bytes);
#else
  throw std::logic_error("unreachable: a CUDA storage exists in a CPU build");
#endif
}

}  // namespace retort
