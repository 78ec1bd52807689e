// Helpers shared by the distill tests: a model's state as raw bytes, for bit-for-bit comparisons.
#pragma once

#include <cstdint>
#include <vector>

#include "nn/module.h"

namespace retort::test {

// Every state-dict tensor's bytes, in state-dict order: equal vectors mean bit-identical models.
inline std::vector<std::vector<uint8_t>> weight_bytes(nn::Module& model) {
  std::vector<std::vector<uint8_t>> out;
  for (const auto& [name, t] : model.state_dict()) {
    // On the host: a device tensor's storage is not readable from here.
    Tensor c = t.detach().contiguous().to(Device::cpu());
    const auto* p = static_cast<const uint8_t*>(c.raw_data());
    out.emplace_back(p, p + c.numel() * dtype_size(c.dtype()));
  }
  return out;
}

}  // namespace retort::test
