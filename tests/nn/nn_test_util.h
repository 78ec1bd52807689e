// Shared set-up of the nn tests: one CPU thread per test binary.
#pragma once

#include "engine/dispatch.h"

namespace retort::test {

// The nn tests run small tensors, where one thread is fastest, and CI runs the test binaries side
// by side (ctest -j nproc): OpenMP teams spin-waiting for a core another binary holds turn a
// millisecond step into a tenth of a second. Every test file includes this header.
inline const bool kNnTestsSingleThreaded = [] {
  set_num_threads(1);
  return true;
}();

}  // namespace retort::test
