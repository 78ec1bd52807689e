// CPU-vs-CUDA parity of the row-major GEMM over sizes, transposes, leading dimensions and scalars.
#include "kernels/gemm.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <string>
#include <vector>

#include "tests/kernels/cuda_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::CudaParityTest;
using test::DeviceArray;
using test::kParityF32Abs;
using test::kParityF32Rel;
using test::random_vector;

using CudaGemmTest = CudaParityTest;

struct GemmSize {
  int64_t m, n, k;
};
const GemmSize kSizes[] = {{1, 1, 1},      {3, 5, 7},     {17, 33, 65}, {64, 128, 96},
                           {128, 10, 256}, {1, 100, 256}, {100, 1, 64}};

struct Scalars {
  float alpha, beta;
};
const Scalars kScalars[] = {{1.0f, 0.0f}, {0.5f, 2.0f}};

// Runs one configuration on both devices and compares C. `pad` widens every leading dimension.
void check_gemm(const CudaContext& gpu, const CpuContext& cpu, bool trans_a, bool trans_b,
                GemmSize size, Scalars scalars, int64_t pad) {
  const int64_t a_rows = trans_a ? size.k : size.m, a_cols = trans_a ? size.m : size.k;
  const int64_t b_rows = trans_b ? size.n : size.k, b_cols = trans_b ? size.k : size.n;
  const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = size.n + pad;
  const std::vector<float> a = random_vector<float>(static_cast<size_t>(a_rows * lda), 51);
  const std::vector<float> b = random_vector<float>(static_cast<size_t>(b_rows * ldb), 52);
  const std::vector<float> c0 = random_vector<float>(static_cast<size_t>(size.m * ldc), 53);

  std::vector<float> c = c0;
  gemm(cpu, trans_a, trans_b, size.m, size.n, size.k, scalars.alpha, a.data(), lda, b.data(), ldb,
       scalars.beta, c.data(), ldc);
  DeviceArray<float> d_a(a), d_b(b), d_c(c0);
  gemm(gpu, trans_a, trans_b, size.m, size.n, size.k, scalars.alpha, d_a.data(), lda, d_b.data(),
       ldb, scalars.beta, d_c.data(), ldc);
  // The padding columns of C are compared too: both twins must leave them alone.
  EXPECT_TRUE(all_close(d_c.download(), c, kParityF32Rel, kParityF32Abs));
}

TEST_F(CudaGemmTest, MatchesCpuOverSizesTransposesAndScalars) {
  for (const GemmSize& size : kSizes) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        for (const Scalars& scalars : kScalars) {
          for (int64_t pad : {0, 3}) {
            SCOPED_TRACE("m " + std::to_string(size.m) + " n " + std::to_string(size.n) + " k " +
                         std::to_string(size.k) + (trans_a ? " A^T" : "") +
                         (trans_b ? " B^T" : "") + " alpha " + std::to_string(scalars.alpha) +
                         " beta " + std::to_string(scalars.beta) + " pad " + std::to_string(pad));
            check_gemm(gpu(), cpu, trans_a, trans_b, size, scalars, pad);
          }
        }
      }
    }
  }
}

TEST_F(CudaGemmTest, BetaZeroIgnoresNanInC) {
  const int64_t m = 4, n = 5, k = 6;
  const std::vector<float> a = random_vector<float>(static_cast<size_t>(m * k), 61);
  const std::vector<float> b = random_vector<float>(static_cast<size_t>(k * n), 62);
  std::vector<float> c(static_cast<size_t>(m * n), 0.0f);
  gemm(cpu, false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  DeviceArray<float> d_a(a), d_b(b);
  DeviceArray<float> d_c = test::poisoned_output(c.size());
  gemm(gpu(), false, false, m, n, k, 1.0f, d_a.data(), k, d_b.data(), n, 0.0f, d_c.data(), n);
  EXPECT_TRUE(all_close(d_c.download(), c, kParityF32Rel, kParityF32Abs));
}

TEST_F(CudaGemmTest, Tf32ModeIsCloseToFp32) {
  // TF32 rounds both operands to 10 mantissa bits (relative error ~5e-4 per product), so over
  // k = 256 terms of size ~0.3 the result moves by up to ~1e-2; this bounds it generously.
  constexpr double kTf32Rel = 2e-2, kTf32Abs = 2e-2;
  mutable_gpu().allow_tf32 = true;
  const int64_t m = 64, n = 48, k = 256;
  const std::vector<float> a = random_vector<float>(static_cast<size_t>(m * k), 71);
  const std::vector<float> b = random_vector<float>(static_cast<size_t>(k * n), 72);
  std::vector<float> c(static_cast<size_t>(m * n), 0.0f);
  gemm(cpu, false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  DeviceArray<float> d_a(a), d_b(b), d_c(std::vector<float>(c.size(), 0.0f));
  gemm(gpu(), false, false, m, n, k, 1.0f, d_a.data(), k, d_b.data(), n, 0.0f, d_c.data(), n);
  EXPECT_TRUE(all_close(d_c.download(), c, kTf32Rel, kTf32Abs));
}

TEST_F(CudaGemmTest, EmptyKScalesC) {
  const int64_t m = 3, n = 4;
  const std::vector<float> c0 = random_vector<float>(static_cast<size_t>(m * n), 81);
  std::vector<float> c = c0;
  const float unused = 0.0f;
  gemm(cpu, false, false, m, n, 0, 1.0f, &unused, 1, &unused, n, 0.5f, c.data(), n);
  DeviceArray<float> d_a(std::vector<float>(1)), d_b(std::vector<float>(1)), d_c(c0);
  gemm(gpu(), false, false, m, n, 0, 1.0f, d_a.data(), 1, d_b.data(), n, 0.5f, d_c.data(), n);
  EXPECT_TRUE(all_close(d_c.download(), c, kParityF32Rel, kParityF32Abs));
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaGemmTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
