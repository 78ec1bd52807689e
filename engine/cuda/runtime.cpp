// The engine's CUDA runtime: one stream/handle context per device, a caching allocator, copies.
#include "engine/cuda/runtime.h"

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"

namespace retort::cuda {
namespace {

// Sets the current device for the scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    RETORT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) RETORT_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { (void)cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// Caching allocator: sizes are rounded up to a size class, freed blocks wait in a per-class free
// list and are handed out again, so a training step that allocates the same tensors every
// iteration stops calling cudaMalloc after its first iteration. All work runs on the device's
// one stream, so a block freed on the host can be reused by later work without an event: the
// stream orders the old reader before the new writer.
class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  ~CachingAllocator() override {
    // Process exit: the driver may already be gone; release what is left without checking.
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) (void)cudaFree(p);
    }
  }

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.bytes_cached -= size;
      stats_.reuses++;
      note_in_use(size);
      return p;
    }
    DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t status = cudaMalloc(&p, size);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      release_cached_locked();
      status = cudaMalloc(&p, size);
    }
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      throw std::runtime_error("CUDA out of memory on cuda:" + std::to_string(device_) +
                               " allocating " + std::to_string(size) + " bytes (" +
                               std::to_string(stats_.bytes_in_use) + " bytes in use): " +
                               cudaGetErrorString(status));
    }
    stats_.device_mallocs++;
    note_in_use(size);
    return p;
  }

  void deallocate(void* ptr, size_t bytes) noexcept override {
    if (ptr == nullptr) return;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    free_[size].push_back(ptr);
    stats_.bytes_in_use -= size;
    stats_.bytes_cached += size;
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceGuard guard(device_);
    RETORT_CUDA_CHECK(cudaDeviceSynchronize());
    release_cached_locked();
  }

 private:
  // 512-byte granularity up to 1 MiB, then 2 MiB granularity: few classes, little waste.
  static size_t round_size(size_t bytes) {
    const size_t small = 512, large = size_t{2} << 20;
    if (bytes <= (size_t{1} << 20)) return (bytes + small - 1) / small * small;
    return (bytes + large - 1) / large * large;
  }
  void note_in_use(size_t size) {
    stats_.bytes_in_use += size;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) {
      stats_.peak_bytes_in_use = stats_.bytes_in_use;
    }
  }
  void release_cached_locked() {
    (void)cudaDeviceSynchronize();
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) (void)cudaFree(p);
      blocks.clear();
    }
    stats_.bytes_cached = 0;
  }

  int device_;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

// Scratch memory for cuDNN/cuBLAS taken from the caching allocator: one growing block per device.
class AllocatorWorkspace final : public kernels::CudaWorkspace {
 public:
  explicit AllocatorWorkspace(CachingAllocator& allocator) : allocator_(allocator) {}
  ~AllocatorWorkspace() override { allocator_.deallocate(data_, bytes_); }
  void* get(size_t bytes) override {
    if (bytes <= bytes_) return data_;
    // Stream order makes handing the old block back safe (see CachingAllocator).
    allocator_.deallocate(data_, bytes_);
    data_ = nullptr;
    bytes_ = 0;
    data_ = allocator_.allocate(bytes);
    bytes_ = bytes;
    return data_;
  }

 private:
  CachingAllocator& allocator_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Everything the engine keeps per device.
struct DeviceState {
  explicit DeviceState(int device) : allocator(device) {
    DeviceGuard guard(device);
    owner = std::make_unique<kernels::CudaContextOwner>();
    workspace = std::make_unique<AllocatorWorkspace>(allocator);
    owner->mutable_context().workspace = workspace.get();
  }
  CachingAllocator allocator;
  std::unique_ptr<kernels::CudaContextOwner> owner;
  std::unique_ptr<AllocatorWorkspace> workspace;
};

DeviceState& state(int device) {
  require_available(Device::cuda(device));
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<DeviceState>> states;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = states[device];
  if (!slot) slot = std::make_unique<DeviceState>(device);
  return *slot;
}

}  // namespace

const kernels::CudaContext& context(int device) { return state(device).owner->context(); }

Allocator& device_allocator(int device) { return state(device).allocator; }

AllocatorStats allocator_stats(int device) { return state(device).allocator.stats(); }

void empty_cache(int device) { state(device).allocator.empty_cache(); }

void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes) {
  const Device& gpu = dst_device.is_cuda() ? dst_device : src_device;
  const kernels::CudaContext& ctx = context(gpu.index);
  DeviceGuard guard(gpu.index);
  cudaMemcpyKind kind = cudaMemcpyDeviceToDevice;
  if (dst_device.is_cpu()) kind = cudaMemcpyDeviceToHost;
  if (src_device.is_cpu()) kind = cudaMemcpyHostToDevice;
  // Ordered after the work already queued on the device's stream; host copies wait for it.
  RETORT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, ctx.stream));
  if (kind != cudaMemcpyDeviceToDevice) RETORT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

}  // namespace retort::cuda
