// Device: where a tensor's storage lives (the CPU or one CUDA GPU), and what this build can reach.
#pragma once

#include <cstdint>
#include <string>

namespace retort {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;

  // Parses "cpu", "cuda", "cuda:N"; throws std::invalid_argument naming the text otherwise.
  static Device parse(const std::string& text);
};

// True when this binary was built with the CUDA backend.
bool cuda_compiled();
// Number of usable CUDA devices: 0 in a CPU-only build or on a machine without a GPU.
int cuda_device_count();
// Throws a one-line error when `device` cannot be used here (CUDA not built, or no GPU).
void require_available(const Device& device);

// How CUDA convolutions and GEMMs compute; storage is fp32 either way. The default matches
// PyTorch's for convolutions: TF32 tensor cores allowed. `deterministic` pins cuDNN to
// deterministic algorithms (every hand-written kernel is deterministic regardless), so two runs
// from the same seed give the same bits; the command line turns TF32 off with it.
struct CudaMathOptions {
  bool allow_tf32 = true;
  bool deterministic = false;
  bool operator==(const CudaMathOptions&) const = default;
};
// Applies to every CUDA device, those already in use included. No effect without CUDA.
void set_cuda_math(const CudaMathOptions& options);
CudaMathOptions cuda_math();

// Waits until the work queued on `device` has finished (nothing to wait for on the CPU).
void synchronize(const Device& device);

}  // namespace retort
