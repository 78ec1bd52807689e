// Dense matrix multiply on row-major matrices: Eigen on the CPU, cuBLAS on CUDA.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// C (m x n) = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is m x k: A is m x k with
// leading dimension lda (>= k), or k x m (lda >= m) when trans_a. Likewise B is k x n (ldb >= n),
// or n x k (ldb >= k) when trans_b. beta = 0 overwrites C without reading it.
template <typename T>
void gemm(const CpuContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);
void gemm(const CudaContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
          float* c, int64_t ldc);

}  // namespace retort::kernels
