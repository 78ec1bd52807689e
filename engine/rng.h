// Generator: a seed plus a Philox counter offset; every random fill reserves counters from it.
#pragma once

#include <cstdint>

namespace retort {

// Counter-based, so a run is reproduced from (seed, offset) alone, on any device or thread count.
// Not thread-safe: give each thread (e.g. the data loader) its own Generator.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves `counters` Philox counters; returns the first one.
  uint64_t advance(uint64_t counters) {
    const uint64_t first = offset_;
    offset_ += counters;
    return first;
  }

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

// The process-wide generator used where none is passed; manual_seed resets it.
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace retort
