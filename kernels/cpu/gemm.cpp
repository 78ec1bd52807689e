// CPU twin of kernels/gemm.h: row-major GEMM mapped onto Eigen's blocked matrix product.
#include "kernels/gemm.h"

#include <omp.h>

#include <Eigen/Core>

namespace retort::kernels {
namespace {

// A row-major matrix whose rows are `ld` elements apart (ld >= cols).
template <typename T>
using ConstRowMajorMap =
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
               Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using RowMajorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                               Eigen::Unaligned, Eigen::OuterStride<>>;

// c = alpha * a * b + beta * c; Eigen folds alpha and the transposes into one GEMM call.
// With beta = 0 the product is assigned (Eigen zero-fills or writes c), so c is never read.
template <typename T, typename Lhs, typename Rhs>
void multiply_into(RowMajorMap<T>& c, const Lhs& a, const Rhs& b, T alpha, T beta) {
  if (beta == T(0)) {
    c.noalias() = alpha * a * b;
    return;
  }
  if (beta != T(1)) c *= beta;
  c.noalias() += alpha * a * b;
}

// Eigen sizes its OpenMP team from omp_get_max_threads(), an ICV private to the calling thread,
// so setting it here and restoring it afterwards bounds the product without touching other
// threads. Inside an OpenMP team of more than one thread Eigen runs serially on its own.
class ThreadBudget {
 public:
  explicit ThreadBudget(int num_threads) : saved_(omp_get_max_threads()), set_(num_threads > 0) {
    if (set_) omp_set_num_threads(num_threads);
  }
  ~ThreadBudget() {
    if (set_) omp_set_num_threads(saved_);
  }
  ThreadBudget(const ThreadBudget&) = delete;
  ThreadBudget& operator=(const ThreadBudget&) = delete;

 private:
  int saved_;
  bool set_;
};

}  // namespace

template <typename T>
void gemm(const CpuContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  RowMajorMap<T> c_map(c, m, n, Eigen::OuterStride<>(ldc));
  // BLAS semantics: alpha = 0 (or an empty inner dimension) reads neither A nor B, so NaNs there
  // do not leak into C; beta = 0 still overwrites C without reading it.
  if (alpha == T(0) || k <= 0) {
    if (beta == T(0)) {
      c_map.setZero();
    } else if (beta != T(1)) {
      c_map *= beta;
    }
    return;
  }
  const ThreadBudget budget(ctx.num_threads);
  // Stored shapes: A is (m, k), or (k, m) when trans_a; B is (k, n), or (n, k) when trans_b.
  const ConstRowMajorMap<T> a_map(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  const ConstRowMajorMap<T> b_map(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  if (!trans_a && !trans_b) {
    multiply_into(c_map, a_map, b_map, alpha, beta);
  } else if (!trans_a && trans_b) {
    multiply_into(c_map, a_map, b_map.transpose(), alpha, beta);
  } else if (trans_a && !trans_b) {
    multiply_into(c_map, a_map.transpose(), b_map, alpha, beta);
  } else {
    multiply_into(c_map, a_map.transpose(), b_map.transpose(), alpha, beta);
  }
}

template void gemm<float>(const CpuContext&, bool, bool, int64_t, int64_t, int64_t, float,
                          const float*, int64_t, const float*, int64_t, float, float*, int64_t);
template void gemm<double>(const CpuContext&, bool, bool, int64_t, int64_t, int64_t, double,
                           const double*, int64_t, const double*, int64_t, double, double*,
                           int64_t);

}  // namespace retort::kernels
