// CPU twin of the Philox4x32-10 random fills (kernels/fill.h), parallel over Philox counters.
#include "kernels/fill.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace retort::kernels {
namespace {

// The counter's high 64 bits (c2, c3): the fill stream. Every fill uses stream 0; the caller's
// offset alone separates fills.
constexpr uint64_t kFillStream = 0;

// Elements per thread before another thread pays off: a Philox block plus log/sqrt/sin/cos per
// element costs several times an element-wise add, so a fill parallelises earlier than the default.
constexpr int64_t kFillWorkPerThread = 8192;

// Box-Muller on one pair of (0, 1] uniforms: z_cos = r cos(2 pi u1), z_sin = r sin(2 pi u1) with
// r = sqrt(-2 log u0). u0 > 0, so r is finite (at most sqrt(48 log 2) ~ 5.77). The float version
// stays in float (logf, sqrtf, cosf, sinf) so that a CUDA twin can reproduce it; the double
// version widens the same uniforms (exactly representable) and computes in double.
void box_muller(uint32_t a, uint32_t b, float& z_cos, float& z_sin) {
  constexpr float kTwoPi = 6.28318530717958647692f;
  const float r = std::sqrt(-2.0f * std::log(uint32_to_unit(a)));
  const float theta = kTwoPi * uint32_to_unit(b);
  z_cos = r * std::cos(theta);
  z_sin = r * std::sin(theta);
}

void box_muller(uint32_t a, uint32_t b, double& z_cos, double& z_sin) {
  constexpr double kTwoPi = 6.28318530717958647692;
  const double r = std::sqrt(-2.0 * std::log(static_cast<double>(uint32_to_unit(a))));
  const double theta = kTwoPi * static_cast<double>(uint32_to_unit(b));
  z_cos = r * std::cos(theta);
  z_sin = r * std::sin(theta);
}

// Runs `block(bits, first_element, count)` for every Philox counter of an n-element fill:
// counter j = offset + j covers elements [4j, 4j + count) with count = 4 except at the tail.
// Each element depends on its index alone, so any thread split gives the same output.
template <typename Block>
void for_each_counter(const CpuContext& ctx, int64_t n, uint64_t seed, uint64_t offset,
                      Block block) {
  const int64_t counters = static_cast<int64_t>(philox_counters(n));
  const int threads = cpu_threads(ctx, n, kFillWorkPerThread);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t j = 0; j < counters; ++j) {
    uint32_t bits[4];
    philox4x32_10(seed, offset + static_cast<uint64_t>(j), kFillStream, bits);
    const int64_t first = 4 * j;
    block(bits, first, std::min<int64_t>(4, n - first));
  }
}

}  // namespace

template <typename T>
void fill_uniform(const CpuContext& ctx, int64_t n, uint64_t seed, uint64_t offset, T low, T high,
                  T* y) {
  const T range = high - low;
  for_each_counter(ctx, n, seed, offset, [=](const uint32_t* bits, int64_t first, int64_t count) {
    for (int64_t lane = 0; lane < count; ++lane) {
      y[first + lane] = low + range * static_cast<T>(uint32_to_unit(bits[lane]));
    }
  });
}

template <typename T>
void fill_normal(const CpuContext& ctx, int64_t n, uint64_t seed, uint64_t offset, T mean, T std,
                 T* y) {
  for_each_counter(ctx, n, seed, offset, [=](const uint32_t* bits, int64_t first, int64_t count) {
    T z[4];  // lanes 0, 2: cosine branch of pairs (0, 1), (2, 3); lanes 1, 3: sine branch
    box_muller(bits[0], bits[1], z[0], z[1]);
    box_muller(bits[2], bits[3], z[2], z[3]);
    for (int64_t lane = 0; lane < count; ++lane) y[first + lane] = mean + std * z[lane];
  });
}

template void fill_uniform<float>(const CpuContext&, int64_t, uint64_t, uint64_t, float, float,
                                  float*);
template void fill_uniform<double>(const CpuContext&, int64_t, uint64_t, uint64_t, double, double,
                                   double*);
template void fill_normal<float>(const CpuContext&, int64_t, uint64_t, uint64_t, float, float,
                                 float*);
template void fill_normal<double>(const CpuContext&, int64_t, uint64_t, uint64_t, double, double,
                                  double*);

}  // namespace retort::kernels
