// CPU-vs-CUDA parity of cross-entropy, the KD divergence and softmax entropy, fwd and bwd.
#include "kernels/loss.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <limits>
#include <random>
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
using test::poisoned_output;
using test::random_vector;

using CudaLossTest = CudaParityTest;

struct RowsCols {
  int64_t rows, cols;
};
const RowsCols kShapes[] = {{1, 1}, {3, 7}, {64, 10}, {128, 100}, {4, 1000}, {3, 2049}, {1, 100}};

std::string describe(const RowsCols& s) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols);
}

std::vector<int64_t> random_labels(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, cols - 1);
  std::vector<int64_t> labels(static_cast<size_t>(rows));
  for (int64_t& label : labels) label = dist(gen);
  return labels;
}

TEST_F(CudaLossTest, CrossEntropyMatchesCpu) {
  for (const RowsCols& s : kShapes) {
    SCOPED_TRACE(describe(s));
    const size_t n = static_cast<size_t>(s.rows * s.cols), rows = static_cast<size_t>(s.rows);
    const std::vector<float> logits = random_vector<float>(n, 171, -6.0f, 6.0f);
    const std::vector<int64_t> labels = random_labels(s.rows, s.cols, 172);
    const std::vector<float> grad_loss = random_vector<float>(rows, 173);
    std::vector<float> loss(rows), log_prob(n), grad_logits(n);
    cross_entropy_forward(cpu, s.rows, s.cols, logits.data(), labels.data(), loss.data(),
                          log_prob.data());
    cross_entropy_backward(cpu, s.rows, s.cols, log_prob.data(), labels.data(), grad_loss.data(),
                           grad_logits.data());

    DeviceArray<float> d_logits(logits), d_grad_loss(grad_loss), d_log_prob_cpu(log_prob);
    DeviceArray<int64_t> d_labels(labels);
    DeviceArray<float> d_loss = poisoned_output(rows), d_log_prob = poisoned_output(n);
    DeviceArray<float> d_grad_logits = poisoned_output(n);
    cross_entropy_forward(gpu(), s.rows, s.cols, d_logits.data(), d_labels.data(), d_loss.data(),
                          d_log_prob.data());
    cross_entropy_backward(gpu(), s.rows, s.cols, d_log_prob_cpu.data(), d_labels.data(),
                           d_grad_loss.data(), d_grad_logits.data());
    EXPECT_TRUE(all_close(d_loss.download(), loss, kParityF32Rel, kParityF32Abs)) << "loss";
    EXPECT_TRUE(all_close(d_log_prob.download(), log_prob, kParityF32Rel, kParityF32Abs))
        << "log_prob";
    EXPECT_TRUE(all_close(d_grad_logits.download(), grad_logits, kParityF32Rel, kParityF32Abs))
        << "grad_logits";
  }
}

TEST_F(CudaLossTest, KdDivergenceMatchesCpu) {
  for (const RowsCols& s : kShapes) {
    for (float temperature : {1.0f, 4.0f}) {
      SCOPED_TRACE(describe(s) + " T " + std::to_string(temperature));
      const size_t n = static_cast<size_t>(s.rows * s.cols), rows = static_cast<size_t>(s.rows);
      const std::vector<float> student = random_vector<float>(n, 181, -6.0f, 6.0f);
      const std::vector<float> teacher = random_vector<float>(n, 182, -8.0f, 8.0f);
      const std::vector<float> grad_kl = random_vector<float>(rows, 183);
      std::vector<float> kl(rows), student_log_prob(n), teacher_prob(n), grad_student(n);
      kd_divergence_forward(cpu, s.rows, s.cols, temperature, student.data(), teacher.data(),
                            kl.data(), student_log_prob.data(), teacher_prob.data());
      kd_divergence_backward(cpu, s.rows, s.cols, temperature, student_log_prob.data(),
                             teacher_prob.data(), grad_kl.data(), grad_student.data());

      DeviceArray<float> d_student(student), d_teacher(teacher), d_grad_kl(grad_kl);
      DeviceArray<float> d_kl = poisoned_output(rows), d_student_log_prob = poisoned_output(n);
      DeviceArray<float> d_teacher_prob = poisoned_output(n), d_grad = poisoned_output(n);
      kd_divergence_forward(gpu(), s.rows, s.cols, temperature, d_student.data(), d_teacher.data(),
                            d_kl.data(), d_student_log_prob.data(), d_teacher_prob.data());
      DeviceArray<float> d_slp_cpu(student_log_prob), d_tp_cpu(teacher_prob);
      kd_divergence_backward(gpu(), s.rows, s.cols, temperature, d_slp_cpu.data(), d_tp_cpu.data(),
                             d_grad_kl.data(), d_grad.data());
      EXPECT_TRUE(all_close(d_kl.download(), kl, kParityF32Rel, kParityF32Abs)) << "kl";
      EXPECT_TRUE(
          all_close(d_student_log_prob.download(), student_log_prob, kParityF32Rel, kParityF32Abs))
          << "student_log_prob";
      EXPECT_TRUE(all_close(d_teacher_prob.download(), teacher_prob, kParityF32Rel, kParityF32Abs))
          << "teacher_prob";
      EXPECT_TRUE(all_close(d_grad.download(), grad_student, kParityF32Rel, kParityF32Abs))
          << "grad_student_logits";
    }
  }
}

TEST_F(CudaLossTest, KdDivergenceOfIdenticalLogitsIsZeroAndIgnoresMinusInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {1.0f, -inf, 3.0f, 0.5f, 0.5f, -inf};
  DeviceArray<float> d_logits(logits);
  DeviceArray<float> d_kl = poisoned_output(2), d_slp = poisoned_output(6),
                     d_tp = poisoned_output(6);
  kd_divergence_forward(gpu(), 2, 3, 2.0f, d_logits.data(), d_logits.data(), d_kl.data(),
                        d_slp.data(), d_tp.data());
  EXPECT_TRUE(all_close(d_kl.download(), std::vector<float>{0.0f, 0.0f}, 0.0, kParityF32Abs));
}

TEST_F(CudaLossTest, SoftmaxEntropyMatchesCpu) {
  for (const RowsCols& s : kShapes) {
    for (float temperature : {1.0f, 2.0f}) {
      SCOPED_TRACE(describe(s) + " T " + std::to_string(temperature));
      const size_t n = static_cast<size_t>(s.rows * s.cols), rows = static_cast<size_t>(s.rows);
      const std::vector<float> logits = random_vector<float>(n, 191, -6.0f, 6.0f);
      std::vector<float> entropy(rows);
      softmax_entropy(cpu, s.rows, s.cols, temperature, logits.data(), entropy.data());
      DeviceArray<float> d_logits(logits), d_entropy = poisoned_output(rows);
      softmax_entropy(gpu(), s.rows, s.cols, temperature, d_logits.data(), d_entropy.data());
      EXPECT_TRUE(all_close(d_entropy.download(), entropy, kParityF32Rel, kParityF32Abs));
    }
  }
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaLossTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
