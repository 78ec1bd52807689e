// CUDA twin of kernels/gemm.h: row-major GEMM through column-major cuBLAS (operands swapped).
#include "kernels/gemm.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"

namespace retort::kernels {
namespace {

// cuBLAS's recommended workspace on Hopper (4 MiB suffices before it). Giving cuBLAS memory from
// the context keeps it from allocating its own, which matters under CUDA graph capture.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

void check_leading_dimension(const char* name, int64_t ld, int64_t min_ld) {
  if (ld < (min_ld > 1 ? min_ld : 1)) {
    throw std::invalid_argument("gemm (CUDA): " + std::string(name) + " = " + std::to_string(ld) +
                                " is smaller than the row length " + std::to_string(min_ld));
  }
}

}  // namespace

void gemm(const CudaContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
          float* c, int64_t ldc) {
  if (m < 0 || n < 0 || k < 0) {
    throw std::invalid_argument("gemm (CUDA): negative size m=" + std::to_string(m) +
                                " n=" + std::to_string(n) + " k=" + std::to_string(k));
  }
  if (m == 0 || n == 0) return;
  check_leading_dimension("lda", lda, trans_a ? m : k);
  check_leading_dimension("ldb", ldb, trans_b ? k : n);
  check_leading_dimension("ldc", ldc, n);

  // A row-major matrix with leading dimension ld is, read column-major, its transpose with the
  // same ld. So row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: call cuBLAS with
  // B first and A second, each keeping its own transpose flag, and m and n exchanged.
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;

  // TF32 is chosen per call: the math mode and the compute type agree, so neither a handle left
  // in TF32 mode nor one left in default mode changes what this call computes.
  RETORT_CUBLAS_CHECK(cublasSetMathMode(
      ctx.cublas, ctx.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  const cublasComputeType_t compute =
      ctx.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if (ctx.workspace != nullptr) {
    RETORT_CUBLAS_CHECK(cublasSetWorkspace(ctx.cublas, ctx.workspace->get(kCublasWorkspaceBytes),
                                           kCublasWorkspaceBytes));
  }
  // k == 0 is valid: cuBLAS then computes C = beta * C (and does not read C when beta == 0).
  RETORT_CUBLAS_CHECK(cublasGemmEx_64(ctx.cublas, op_b, op_a, n, m, k, &alpha, b, CUDA_R_32F, ldb,
                                      a, CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc, compute,
                                      CUBLAS_GEMM_DEFAULT));
}

}  // namespace retort::kernels
