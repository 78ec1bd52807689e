// The engine's CUDA runtime: per-device kernel contexts, the device allocator and byte copies.
#pragma once

#include <cstddef>

#include "engine/device.h"
#include "engine/storage.h"
#include "kernels/context.h"

namespace retort::cuda {

// The kernel context of a device (its stream, cuBLAS/cuDNN handles, workspace, algorithm cache),
// created on first use. Throws when the device is not present.
const kernels::CudaContext& context(int device);

// The allocator behind CUDA storages of a device.
Allocator& device_allocator(int device);

// Copies bytes where at least one side is a CUDA device; synchronous with respect to the host.
void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes);

}  // namespace retort::cuda
