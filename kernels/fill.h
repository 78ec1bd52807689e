// Counter-based random fills (Philox4x32-10): the same seed and offset give the same numbers on
// every device and thread count.
#pragma once

#include <array>
#include <cstdint>

#include "kernels/context.h"

#if defined(__CUDACC__)
#define RETORT_HOST_DEVICE __host__ __device__
#else
#define RETORT_HOST_DEVICE
#endif

namespace retort::kernels {

// Philox4x32 with 10 rounds (Salmon et al., SC'11): maps (key = seed, counter) to 4 uint32.
RETORT_HOST_DEVICE inline void philox4x32_10(uint64_t seed, uint64_t counter_lo,
                                             uint64_t counter_hi, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// Maps a uint32 to a float in (0, 1]: never 0, so log(u) in Box-Muller is finite.
RETORT_HOST_DEVICE inline float uint32_to_unit(uint32_t v) {
  return (static_cast<float>(v >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

// Element i of a fill draws from counter (lo = offset + i / 4, hi = 0) lane i % 4, so a fill of n
// elements consumes ceil(n / 4) counters; the caller advances its offset by that amount.
// uniform: low + (high - low) * u with u in (0, 1].
template <typename T>
void fill_uniform(const CpuContext& ctx, int64_t n, uint64_t seed, uint64_t offset, T low, T high,
                  T* y);
void fill_uniform(const CudaContext& ctx, int64_t n, uint64_t seed, uint64_t offset, float low,
                  float high, float* y);

// normal: Box-Muller on lane pairs (0,1) and (2,3) of each counter: lanes 0 and 2 take the cosine
// branch, lanes 1 and 3 the sine branch; y = mean + stddev * z.
template <typename T>
void fill_normal(const CpuContext& ctx, int64_t n, uint64_t seed, uint64_t offset, T mean,
                 T stddev, T* y);
void fill_normal(const CudaContext& ctx, int64_t n, uint64_t seed, uint64_t offset, float mean,
                 float stddev, float* y);

// Number of Philox counters a fill of n elements consumes.
inline uint64_t philox_counters(int64_t n) { return static_cast<uint64_t>((n + 3) / 4); }

}  // namespace retort::kernels
