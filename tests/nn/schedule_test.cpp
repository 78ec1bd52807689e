// Tests of the learning-rate schedules at their boundary epochs and iterations.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "nn/schedule.h"
#include "tests/nn/nn_test_util.h"

namespace retort::nn {
namespace {

TEST(MultiStepLR, RepDistillerBoundaries) {
  const MultiStepLR s(0.05, {150, 180, 210});
  EXPECT_FALSE(s.per_iteration());
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(1), 0.05);
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(150), 0.05);
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(151), 0.005);
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(180), 0.005);
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(181), 0.0005);
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(210), 0.0005);
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(211), 0.00005);
  EXPECT_DOUBLE_EQ(s.lr_at_epoch(240), 0.00005);
  EXPECT_DOUBLE_EQ(s.lr({.epoch = 151, .iteration = 0}), 0.005);
  EXPECT_THROW(s.lr_at_epoch(0), std::invalid_argument);
  EXPECT_THROW(MultiStepLR(0.1, {180, 150}), std::invalid_argument);
  EXPECT_DOUBLE_EQ(MultiStepLR(0.1, {}).lr_at_epoch(1000), 0.1);
}

TEST(CosineLR, EndpointsMidpointAndBeyond) {
  const CosineLR s(0.05, 0.001, 100);
  EXPECT_TRUE(s.per_iteration());
  EXPECT_DOUBLE_EQ(s.lr_at_iteration(0), 0.05);
  EXPECT_NEAR(s.lr_at_iteration(50), 0.0255, 1e-15);
  EXPECT_NEAR(s.lr_at_iteration(25), 0.001 + 0.049 * 0.5 * (1 + std::cos(std::numbers::pi / 4)),
              1e-15);
  EXPECT_NEAR(s.lr_at_iteration(99), 0.001 + 0.049 * 0.5 * (1 + std::cos(std::numbers::pi * 0.99)),
              1e-15);
  EXPECT_DOUBLE_EQ(s.lr_at_iteration(100), 0.001);
  EXPECT_DOUBLE_EQ(s.lr_at_iteration(1000), 0.001);
  EXPECT_THROW(s.lr_at_iteration(-1), std::invalid_argument);
  EXPECT_THROW(CosineLR(0.01, 0.1, 10), std::invalid_argument);
  EXPECT_THROW(CosineLR(0.1, 0.0, 0), std::invalid_argument);
}

TEST(CosineRestartsLR, RestartsAtEveryStage) {
  // Stages of 10, 20 and 10 iterations.
  const CosineRestartsLR s(0.05, 0.0, {10, 20, 10});
  EXPECT_EQ(s.num_stages(), 3);
  EXPECT_DOUBLE_EQ(s.lr_at_iteration(0), 0.05);
  EXPECT_NEAR(s.lr_at_iteration(5), 0.025, 1e-15);
  EXPECT_NEAR(s.lr_at_iteration(9), 0.025 * (1 + std::cos(std::numbers::pi * 0.9)), 1e-15);
  EXPECT_EQ(s.stage_of(9), 0);
  EXPECT_EQ(s.stage_of(10), 1);
  EXPECT_EQ(s.stage_start(1), 10);
  EXPECT_DOUBLE_EQ(s.lr_at_iteration(10), 0.05);  // restart
  EXPECT_NEAR(s.lr_at_iteration(20), 0.025, 1e-15);
  EXPECT_EQ(s.stage_of(29), 1);
  EXPECT_DOUBLE_EQ(s.lr_at_iteration(30), 0.05);  // restart
  EXPECT_EQ(s.stage_start(2), 30);
  EXPECT_NEAR(s.lr_at_iteration(35), 0.025, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr_at_iteration(40), 0.0);  // past the end
  EXPECT_EQ(s.stage_of(40), 2);
  EXPECT_DOUBLE_EQ(s.lr({.epoch = 3, .iteration = 30}), 0.05);
  EXPECT_THROW(CosineRestartsLR(0.05, 0.0, {}), std::invalid_argument);
  EXPECT_THROW(CosineRestartsLR(0.05, 0.0, {10, 0}), std::invalid_argument);
  EXPECT_THROW(s.stage_start(3), std::out_of_range);
}

}  // namespace
}  // namespace retort::nn
