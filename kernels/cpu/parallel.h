// OpenMP helpers shared by the CPU kernels: the thread count a context asks for.
#pragma once

#include <omp.h>

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// Threads to use for a loop of `work` independent items: the context's budget (all cores when 0),
// and a single thread for small loops where forking costs more than it saves.
inline int cpu_threads(const CpuContext& ctx, int64_t work, int64_t min_work_per_thread = 32768) {
  const int budget = ctx.num_threads > 0 ? ctx.num_threads : omp_get_max_threads();
  if (work < 2 * min_work_per_thread) return 1;
  const int64_t useful = work / min_work_per_thread;
  return static_cast<int>(useful < budget ? useful : budget);
}

}  // namespace retort::kernels
