// Storage: one owned block of device or host memory that tensors view; Allocator: where it comes from.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "engine/device.h"

namespace retort {

// An allocator hands out blocks for one device. CPU blocks are 64-byte aligned host memory; the
// CUDA backend plugs its caching allocator in behind the same interface.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) noexcept = 0;
};

// The allocator for a device; throws when the device is not available in this build/machine.
Allocator& allocator_for(const Device& device);

// Memory shared by every tensor that views it. Freed through its allocator when the last view
// goes away. Move-only through shared_ptr.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  const Device& device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

// Copies `bytes` between any two devices (host <-> host, host <-> CUDA, CUDA <-> CUDA).
void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes);

}  // namespace retort
