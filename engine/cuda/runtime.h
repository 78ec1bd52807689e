// The engine's CUDA runtime: per-device kernel contexts, the device allocator and byte copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/device.h"
#include "engine/storage.h"
#include "kernels/context.h"

namespace retort::cuda {

// The kernel context of a device (its stream, cuBLAS/cuDNN handles, workspace, algorithm cache),
// created on first use. Throws when the device is not present.
const kernels::CudaContext& context(int device);

// The allocator behind CUDA storages of a device.
Allocator& device_allocator(int device);

// Copies bytes where at least one side is a CUDA device, in the device stream's order. A copy to
// the host returns when the bytes have arrived. A copy from the host returns once `src` has been
// read: up to kStagedCopyBytes it goes through a pinned staging ring and does not wait for the
// device (uploading a batch's labels does not stall the step); larger ones wait for the copy.
void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes);
inline constexpr size_t kStagedCopyBytes = size_t{1} << 20;

// Sets allow_tf32 / deterministic on every device context, present and future (called by
// retort::set_cuda_math).
void apply_math_options(const CudaMathOptions& options);

// Waits for the device's stream.
void synchronize(int device);

// For CUDA graphs (engine/graph.h): the calling thread's allocations on `device` go to a new
// private pool from begin_graph_pool() to end_graph_pool(); the pool's blocks stay reserved for
// the graph until release_graph_pool(). stream_capturing() tells whether the device's stream is
// being captured (copies to or from the host are refused then).
uint64_t begin_graph_pool(int device);
void end_graph_pool(int device);
void release_graph_pool(int device, uint64_t pool) noexcept;
bool stream_capturing(int device);

}  // namespace retort::cuda

namespace retort::cuda {

// What the caching allocator of one device has done so far.
struct AllocatorStats {
  size_t bytes_in_use = 0;       // held by live storages
  size_t bytes_cached = 0;       // freed by storages, kept for reuse
  size_t peak_bytes_in_use = 0;
  uint64_t device_mallocs = 0;   // cudaMalloc calls: flat in a steady-state training step
  uint64_t reuses = 0;           // allocations served from the cache
};
AllocatorStats allocator_stats(int device);
// Returns every cached block to the driver (cudaFree); live storages are untouched.
void empty_cache(int device);
// Starts peak_bytes_in_use over from the bytes in use now.
void reset_peak_stats(int device);
// The GPU's name ("NVIDIA H100 80GB HBM3").
std::string device_name(int device);

}  // namespace retort::cuda
