// Tests of the top-k accuracy counter, ties and NaN included.
#include <gtest/gtest.h>

#include <limits>

#include "nn/metrics.h"
#include "tests/nn/nn_test_util.h"

namespace retort::nn {
namespace {

TEST(CountCorrect, TopOneAndTopK) {
  // Row 0: label 2 is the max; row 1: label 0 is second; row 2: label 1 is last of 4.
  const Tensor logits = Tensor::from_vector<float>(
      {0.1f, 0.2f, 0.9f, 0.0f, 0.5f, 0.7f, 0.1f, 0.2f, 0.4f, -1.0f, 0.3f, 0.2f}, {3, 4});
  const Tensor labels = Tensor::from_vector<int64_t>({2, 0, 1}, {3});
  EXPECT_EQ(count_correct(logits, labels, 1), 1);
  EXPECT_EQ(count_correct(logits, labels, 2), 2);
  EXPECT_EQ(count_correct(logits, labels, 3), 2);
  EXPECT_EQ(count_correct(logits, labels, 4), 3);
  EXPECT_EQ(count_correct(logits, labels, 5), 3);  // k is clamped to C
  EXPECT_EQ(count_correct(logits.to(DType::f64), labels, 1), 1);
}

TEST(CountCorrect, TiesGoToTheLowerIndexAndNaNNeverCounts) {
  const Tensor logits = Tensor::from_vector<float>({1, 1, 1, 1}, {2, 2});
  EXPECT_EQ(count_correct(logits, Tensor::from_vector<int64_t>({0, 1}, {2}), 1), 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor bad = Tensor::from_vector<float>({nan, nan}, {1, 2});
  EXPECT_EQ(count_correct(bad, Tensor::from_vector<int64_t>({0}, {1}), 2), 0);
}

TEST(CountCorrect, RejectsBadArguments) {
  const Tensor logits = Tensor::zeros({2, 3});
  EXPECT_THROW(count_correct(logits, Tensor::from_vector<int64_t>({0, 3}, {2}), 1),
               std::invalid_argument);
  EXPECT_THROW(count_correct(logits, Tensor::from_vector<int64_t>({0}, {1}), 1),
               std::invalid_argument);
  EXPECT_THROW(count_correct(logits, Tensor::zeros({2}), 1), std::invalid_argument);
  EXPECT_THROW(count_correct(logits, Tensor::from_vector<int64_t>({0, 1}, {2}), 0),
               std::invalid_argument);
}

}  // namespace
}  // namespace retort::nn
