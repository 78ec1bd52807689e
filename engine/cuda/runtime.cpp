// The engine's CUDA runtime: one stream/handle context per device, a caching allocator, copies.
#include "engine/cuda/runtime.h"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/handles.h"

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
//
// Graph pools: while a CUDA graph is captured, the capturing thread's allocations come from a
// private pool, and blocks of that pool go back to it when freed. A replay writes into the same
// addresses as the capture did, so no block of a live graph's pool may be handed to anyone else;
// when the graph is destroyed its pool is released: free blocks join the shared cache, and blocks
// still held by tensors (a graph's outputs) join it when those are freed. A pool that lacks a
// block of a size takes one from the shared cache before calling cudaMalloc (the capture waited
// for the stream, so cached blocks are idle): a graph recaptured every epoch reuses the memory
// its predecessor gave back instead of growing the device's footprint by a step each time.
class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  ~CachingAllocator() override {
    // Process exit: the driver may already be gone; release what is left without checking.
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) (void)cudaFree(p);
    }
    for (auto& [id, pool] : pools_) {
      for (auto& [size, blocks] : pool.free) {
        for (void* p : blocks) (void)cudaFree(p);
      }
    }
  }

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    const bool to_pool = active_pool_ != 0 && std::this_thread::get_id() == capture_thread_;
    auto& free_lists = to_pool ? pools_.at(active_pool_).free : free_;
    if (void* p = take_cached(free_lists, size)) return p;
    if (to_pool) {
      if (void* p = take_cached(free_, size)) {
        owner_[p] = active_pool_;  // the block is the pool's from now on
        return p;
      }
    }
    DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t status = cudaMalloc(&p, size);
    if (status == cudaErrorMemoryAllocation && !to_pool) {
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
    if (to_pool) owner_[p] = active_pool_;
    return p;
  }

  void deallocate(void* ptr, size_t bytes) noexcept override {
    if (ptr == nullptr) return;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.bytes_in_use -= size;
    stats_.bytes_cached += size;
    auto owner = owner_.find(ptr);
    if (owner != owner_.end()) {
      auto pool = pools_.find(owner->second);
      if (pool != pools_.end()) {
        pool->second.free[size].push_back(ptr);
        return;
      }
      owner_.erase(owner);  // its graph is gone: the block is an ordinary one again
    }
    free_[size].push_back(ptr);
  }

  // Routes the calling thread's allocations to a new private pool until end_pool(); returns
  // the pool's id for release_pool().
  uint64_t begin_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (active_pool_ != 0) throw std::logic_error("a CUDA graph capture is already in progress");
    active_pool_ = next_pool_++;
    pools_[active_pool_];
    capture_thread_ = std::this_thread::get_id();
    return active_pool_;
  }
  void end_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    active_pool_ = 0;
  }
  void release_pool(uint64_t id) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    auto pool = pools_.find(id);
    if (pool == pools_.end()) return;
    for (auto& [size, blocks] : pool->second.free) {
      for (void* p : blocks) {
        owner_.erase(p);
        free_[size].push_back(p);
      }
    }
    pools_.erase(pool);
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  // True while a graph is being captured or any captured graph's pool is alive.
  bool graphs_alive() {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_pool_ != 0 || !pools_.empty();
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceGuard guard(device_);
    RETORT_CUDA_CHECK(cudaDeviceSynchronize());
    release_cached_locked();
  }

 private:
  struct Pool {
    std::map<size_t, std::vector<void*>> free;
  };

  // A cached block of the size class from `free_lists`, counted as in use, or null.
  void* take_cached(std::map<size_t, std::vector<void*>>& free_lists, size_t size) {
    auto it = free_lists.find(size);
    if (it == free_lists.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= size;
    stats_.reuses++;
    note_in_use(size);
    return p;
  }
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
  // Frees the shared cache (graph pools keep theirs).
  void release_cached_locked() {
    (void)cudaDeviceSynchronize();
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) {
        (void)cudaFree(p);
        stats_.bytes_cached -= size;
      }
      blocks.clear();
    }
  }

  int device_;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  std::map<uint64_t, Pool> pools_;
  std::unordered_map<void*, uint64_t> owner_;  // blocks that belong to a graph pool
  uint64_t active_pool_ = 0, next_pool_ = 1;
  std::thread::id capture_thread_;
  AllocatorStats stats_;
};

// Scratch memory for cuDNN/cuBLAS taken from the caching allocator: one growing block per device.
// A captured graph keeps the scratch address it was recorded with, so while any graph is alive a
// block the workspace outgrew is retired, not handed back (a tensor given that block would be
// overwritten by the next replay); retired blocks go back once no graph is alive.
class AllocatorWorkspace final : public kernels::CudaWorkspace {
 public:
  explicit AllocatorWorkspace(CachingAllocator& allocator) : allocator_(allocator) {}
  ~AllocatorWorkspace() override {
    allocator_.deallocate(data_, bytes_);
    for (const auto& [p, bytes] : retired_) allocator_.deallocate(p, bytes);
  }
  void* get(size_t bytes) override {
    if (bytes <= bytes_) return data_;
    const bool graphs_alive = allocator_.graphs_alive();
    if (!graphs_alive) {
      for (const auto& [p, size] : retired_) allocator_.deallocate(p, size);
      retired_.clear();
    }
    // Stream order makes handing the old block back safe (see CachingAllocator).
    if (data_ != nullptr && graphs_alive) {
      retired_.emplace_back(data_, bytes_);
    } else {
      allocator_.deallocate(data_, bytes_);
    }
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
  std::vector<std::pair<void*, size_t>> retired_;  // outgrown blocks a live graph may still use
};

// Pinned host buffers that small uploads pass through so they need not wait for the device: the
// bytes are copied into a slot on the host, the slot is copied to the device in stream order, and
// an event tells when the slot may be reused. A slot is reused only after its event, so the wait
// happens only when the device is kSlots uploads behind.
class StagingRing {
 public:
  static constexpr int kSlots = 16;

  StagingRing() {
    for (Slot& slot : slots_) {
      RETORT_CUDA_CHECK(cudaHostAlloc(&slot.host, kStagedCopyBytes, cudaHostAllocDefault));
      slot.event = std::make_unique<kernels::CudaEvent>(cudaEventDisableTiming);
    }
  }
  ~StagingRing() {
    for (Slot& slot : slots_) (void)cudaFreeHost(slot.host);
  }
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  void upload(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& slot = slots_[next_];
    next_ = (next_ + 1) % kSlots;
    if (slot.used) slot.event->synchronize();
    std::memcpy(slot.host, src, bytes);
    RETORT_CUDA_CHECK(cudaMemcpyAsync(dst, slot.host, bytes, cudaMemcpyHostToDevice, stream));
    slot.event->record(stream);
    slot.used = true;
  }

 private:
  struct Slot {
    void* host = nullptr;
    std::unique_ptr<kernels::CudaEvent> event;
    bool used = false;
  };
  std::mutex mutex_;
  Slot slots_[kSlots];
  int next_ = 0;
};

// Everything the engine keeps per device.
struct DeviceState {
  DeviceState(int device, const CudaMathOptions& math) : allocator(device) {
    DeviceGuard guard(device);
    owner = std::make_unique<kernels::CudaContextOwner>();
    workspace = std::make_unique<AllocatorWorkspace>(allocator);
    owner->mutable_context().workspace = workspace.get();
    owner->mutable_context().allow_tf32 = math.allow_tf32;
    owner->mutable_context().deterministic = math.deterministic;
    staging = std::make_unique<StagingRing>();
  }
  CachingAllocator allocator;
  std::unique_ptr<kernels::CudaContextOwner> owner;
  std::unique_ptr<AllocatorWorkspace> workspace;
  std::unique_ptr<StagingRing> staging;
};

std::mutex states_mutex;
// Never destroyed: at process exit the CUDA runtime may already be unloaded when static
// destructors run, and tensors with static lifetime may still hand blocks back. The driver
// reclaims the device memory, streams and handles with the process.
std::map<int, std::unique_ptr<DeviceState>>& all_states() {
  static auto* states = new std::map<int, std::unique_ptr<DeviceState>>();
  return *states;
}

DeviceState& state(int device) {
  require_available(Device::cuda(device));
  // Read before states_mutex: set_cuda_math holds the math lock while it takes states_mutex.
  const CudaMathOptions math = cuda_math();
  std::lock_guard<std::mutex> lock(states_mutex);
  auto& slot = all_states()[device];
  if (!slot) slot = std::make_unique<DeviceState>(device, math);
  return *slot;
}

}  // namespace

const kernels::CudaContext& context(int device) { return state(device).owner->context(); }

Allocator& device_allocator(int device) { return state(device).allocator; }

AllocatorStats allocator_stats(int device) { return state(device).allocator.stats(); }

void empty_cache(int device) { state(device).allocator.empty_cache(); }

void reset_peak_stats(int device) { state(device).allocator.reset_peak(); }

std::string device_name(int device) {
  require_available(Device::cuda(device));
  cudaDeviceProp props{};
  RETORT_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
  return props.name;
}

void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes) {
  if (bytes == 0) return;
  const Device& gpu = dst_device.is_cuda() ? dst_device : src_device;
  DeviceState& device = state(gpu.index);
  const kernels::CudaContext& ctx = device.owner->context();
  DeviceGuard guard(gpu.index);
  cudaMemcpyKind kind = cudaMemcpyDeviceToDevice;
  if (dst_device.is_cpu()) kind = cudaMemcpyDeviceToHost;
  if (src_device.is_cpu()) kind = cudaMemcpyHostToDevice;
  if (kind != cudaMemcpyDeviceToDevice) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    RETORT_CUDA_CHECK(cudaStreamIsCapturing(ctx.stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) {
      throw std::logic_error(
          "a copy between the host and cuda:" + std::to_string(gpu.index) +
          " inside a CUDA graph capture (item(), to(cpu), an upload): a captured step must keep "
          "its data on the device; copy inputs into the graph's static tensors before replay");
    }
  }
  if (kind == cudaMemcpyHostToDevice && bytes <= kStagedCopyBytes) {
    device.staging->upload(dst, src, bytes, ctx.stream);
    return;
  }
  // Ordered after the work already queued on the device's stream; host copies wait for it.
  RETORT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, ctx.stream));
  if (kind != cudaMemcpyDeviceToDevice) RETORT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

uint64_t begin_graph_pool(int device) { return state(device).allocator.begin_pool(); }

void end_graph_pool(int device) { state(device).allocator.end_pool(); }

void release_graph_pool(int device, uint64_t pool) noexcept {
  try {
    state(device).allocator.release_pool(pool);
  } catch (...) {  // the device state exists whenever a pool does; nothing to release otherwise
  }
}

bool stream_capturing(int device) {
  const kernels::CudaContext& ctx = context(device);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  RETORT_CUDA_CHECK(cudaStreamIsCapturing(ctx.stream, &capture));
  return capture != cudaStreamCaptureStatusNone;
}

void apply_math_options(const CudaMathOptions& options) {
  std::lock_guard<std::mutex> lock(states_mutex);
  for (auto& [index, device] : all_states()) {
    if (!device) continue;
    kernels::CudaContext& ctx = device->owner->mutable_context();
    ctx.allow_tf32 = options.allow_tf32;
    ctx.deterministic = options.deterministic;
  }
}

void synchronize(int device) {
  const kernels::CudaContext& ctx = context(device);
  DeviceGuard guard(device);
  RETORT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

}  // namespace retort::cuda
