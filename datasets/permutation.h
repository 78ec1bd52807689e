// Seeded permutations from Philox: the same (n, seed, stream) gives the same order everywhere.
#pragma once

#include <cstdint>
#include <vector>

namespace retort::data {

// Philox counter streams (the counter's high 64 bits) used by datasets/, apart from the fills'
// stream 0 and augmentation's stream 1 (kernels/augment.h), so one seed can drive them all.
inline constexpr uint64_t kSubsetStream = 2;
// The loader's shuffle for epoch e uses stream kShuffleStreamBase + e.
inline constexpr uint64_t kShuffleStreamBase = uint64_t{1} << 32;

// A uniformly random permutation of 0..n-1: Fisher-Yates from the last position down, where step
// i (n-1 >= i >= 1) draws Philox counter (lo = i, hi = stream) with key = seed, forms the 64-bit
// r = lane0 | lane1 << 32 and swaps position i with j = (r * (i + 1)) >> 64 (Lemire's mapping;
// bias below 2^-32 for n < 2^32).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream);

}  // namespace retort::data
