// Finite-difference gradient checks in float64 for every differentiable op, and the meta-test
// that fails when an op is registered as differentiable without a check here.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "engine/dispatch.h"
#include "tests/engine/gradcheck.h"

namespace retort::test {
namespace {

using Case = std::function<::testing::AssertionResult()>;

// One entry per op name of kOpTable; several checks may hide behind one entry.
const std::map<std::string, Case>& cases() {
  static const std::map<std::string, Case> table = {
      {"add",
       [] {
         return gradcheck([](const auto& in) { return add(in[0], in[1]); },
                          {leaf({2, 3, 4}, 1), leaf({3, 1}, 2)});
       }},
      {"sub",
       [] {
         return gradcheck([](const auto& in) { return sub(in[0], in[1]); },
                          {leaf({4, 1, 3}, 3), leaf({2, 3}, 4)});
       }},
      {"mul",
       [] {
         return gradcheck([](const auto& in) { return mul(in[0], in[1]); },
                          {leaf({2, 3}, 5), leaf({1, 3}, 6)});
       }},
      {"div",
       [] {
         return gradcheck([](const auto& in) { return div(in[0], in[1]); },
                          {leaf({3, 4}, 7), leaf({4}, 8, 0.5, 2.0)});
       }},
      {"affine",
       [] {
         return gradcheck([](const auto& in) { return 3.0 - in[0] * 2.5; }, {leaf({5}, 9)});
       }},
      {"neg", [] { return gradcheck([](const auto& in) { return -in[0]; }, {leaf({2, 2}, 10)}); }},
      {"exp",
       [] { return gradcheck([](const auto& in) { return exp(in[0]); }, {leaf({3, 2}, 11)}); }},
      {"log",
       [] {
         return gradcheck([](const auto& in) { return log(in[0]); }, {leaf({6}, 12, 0.5, 2.0)});
       }},
      {"relu",
       [] { return gradcheck([](const auto& in) { return relu(in[0]); }, {leaf({4, 5}, 13)}); }},
      {"relu6",
       [] {
         return gradcheck([](const auto& in) { return relu6(in[0]); },
                          {leaf({4, 5}, 14, -2.0, 8.0)});
       }},
      {"sum",
       [] {
         auto r = gradcheck([](const auto& in) { return sum(in[0], {1}); }, {leaf({2, 3, 4}, 15)});
         if (!r) return r;
         return gradcheck([](const auto& in) { return sum(in[0]); }, {leaf({3, 2}, 16)});
       }},
      {"mean",
       [] {
         return gradcheck([](const auto& in) { return mean(in[0], {0, -1}, true); },
                          {leaf({2, 3, 4}, 17)});
       }},
      {"matmul",
       [] {
         return gradcheck([](const auto& in) { return matmul(in[0], in[1]); },
                          {leaf({3, 4}, 18), leaf({4, 5}, 19)});
       }},
      {"linear",
       [] {
         auto r = gradcheck([](const auto& in) { return linear(in[0], in[1], in[2]); },
                            {leaf({3, 4}, 20), leaf({5, 4}, 21), leaf({5}, 22)});
         if (!r) return r;
         return gradcheck([](const auto& in) { return linear(in[0], in[1]); },
                          {leaf({2, 3}, 23), leaf({4, 3}, 24)});
       }},
      {"conv2d",
       [] {
         auto grouped = gradcheck(
             [](const auto& in) {
               return conv2d(in[0], in[1], in[2], Conv2dOptions::make(2, 1, 2));
             },
             {leaf({2, 4, 5, 6}, 25), leaf({6, 2, 3, 3}, 26), leaf({6}, 27)});
         if (!grouped) return grouped;
         auto depthwise = gradcheck(
             [](const auto& in) {
               return conv2d(in[0], in[1], Tensor(), Conv2dOptions::make(1, 1, 3));
             },
             {leaf({2, 3, 5, 5}, 28), leaf({3, 1, 3, 3}, 29)});
         if (!depthwise) return depthwise;
         // Only the weight needs a gradient (a network's first layer): x is not saved for it.
         auto weight_only = gradcheck(
             [](const auto& in) { return conv2d(in[0], in[1], Tensor(), Conv2dOptions::make(1, 0)); },
             {leaf({2, 3, 4, 4}, 58, -1.0, 1.0, false), leaf({2, 3, 3, 3}, 59)});
         if (!weight_only) return weight_only;
         auto input_only = gradcheck(
             [](const auto& in) { return conv2d(in[0], in[1], Tensor(), Conv2dOptions::make(1, 1)); },
             {leaf({2, 3, 4, 4}, 60), leaf({2, 3, 3, 3}, 61, -1.0, 1.0, false)});
         if (!input_only) return input_only;
         return gradcheck(
             [](const auto& in) { return conv2d(in[0], in[1], Tensor(), {2, 1, 0, 1, 1}); },
             {leaf({1, 2, 7, 5}, 30), leaf({3, 2, 1, 2}, 31)});
       }},
      {"conv2d_fused",
       [] {
         // Residuals in (-3, 9) put outputs below 0, inside (0, 6) and above 6; the inputs are
         // checked to stay clear of the kinks, where a central difference straddles two slopes.
         for (const Activation act : {Activation::relu, Activation::relu6}) {
           const std::vector<Tensor> in = {leaf({2, 4, 5, 6}, 325), leaf({6, 2, 3, 3}, 326),
                                           leaf({6}, 327), leaf({2, 6, 3, 3}, 328, -3.0, 9.0)};
           const Conv2dOptions o = Conv2dOptions::make(2, 1, 2);
           {
             NoGradGuard no_grad;
             const Tensor pre = add(conv2d(in[0], in[1], in[2], o), in[3]);
             for (const double v : pre.to_vector<double>()) {
               if (std::abs(v) < 1e-3 || std::abs(v - 6.0) < 1e-3) {
                 return ::testing::AssertionFailure() << "a pre-activation value " << v
                                                      << " sits on a kink: change the seeds";
               }
             }
           }
           auto r = gradcheck(
               [&](const auto& t) { return conv2d_fused(t[0], t[1], t[2], t[3], act, o); }, in);
           if (!r) return r << (act == Activation::relu ? " (relu)" : " (relu6)");
         }
         // No bias, no activation, a 1x1 path: the residual's gradient is the incoming one.
         return gradcheck(
             [](const auto& t) {
               return conv2d_fused(t[0], t[1], Tensor(), t[2], Activation::none, {});
             },
             {leaf({2, 3, 4, 5}, 329), leaf({4, 3, 1, 1}, 330), leaf({2, 4, 4, 5}, 331)});
       }},
      {"batch_norm",
       [] {
         for (bool training : {true, false}) {
           Tensor running_mean = leaf({3}, 32, -0.5, 0.5, false);
           Tensor running_var = leaf({3}, 33, 0.5, 1.5, false);
           auto r = gradcheck(
               [&](const auto& in) {
                 return batch_norm(in[0], in[1], in[2], running_mean, running_var, training);
               },
               {leaf({4, 3, 2, 3}, 34), leaf({3}, 35), leaf({3}, 36)});
           if (!r) return r << " (training=" << training << ")";
         }
         return gradcheck(
             [](const auto& in) {
               return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true);
             },
             {leaf({5, 4}, 37), leaf({4}, 38), leaf({4}, 39)});
       }},
      {"batch_norm_relu",
       [] {
         for (bool training : {true, false}) {
           Tensor running_mean = leaf({3}, 62, -0.5, 0.5, false);
           Tensor running_var = leaf({3}, 63, 0.5, 1.5, false);
           auto r = gradcheck(
               [&](const auto& in) {
                 return batch_norm_relu(in[0], in[1], in[2], running_mean, running_var, training);
               },
               {leaf({4, 3, 2, 3}, 64), leaf({3}, 65), leaf({3}, 66)});
           if (!r) return r << " (training=" << training << ")";
         }
         return gradcheck(
             [](const auto& in) {
               return batch_norm_relu(in[0], in[1], in[2], Tensor(), Tensor(), true);
             },
             {leaf({5, 4}, 67), leaf({4}, 68), leaf({4}, 69)});
       }},
      {"batch_norm_add_relu",
       [] {
         for (bool training : {true, false}) {
           Tensor running_mean = leaf({3}, 162, -0.5, 0.5, false);
           Tensor running_var = leaf({3}, 163, 0.5, 1.5, false);
           auto r = gradcheck(
               [&](const auto& in) {
                 return batch_norm_add_relu(in[0], in[3], in[1], in[2], running_mean, running_var,
                                            training);
               },
               {leaf({4, 3, 2, 3}, 164), leaf({3}, 165), leaf({3}, 166), leaf({4, 3, 2, 3}, 167)});
           if (!r) return r << " (training=" << training << ")";
         }
         return gradcheck(
             [](const auto& in) {
               return batch_norm_add_relu(in[0], in[1], Tensor(), Tensor(), Tensor(), Tensor(),
                                          true);
             },
             {leaf({5, 4}, 168), leaf({5, 4}, 169)});
       }},
      {"max_pool2d",
       [] {
         return gradcheck(
             [](const auto& in) { return max_pool2d(in[0], Pool2dOptions::make(3, 2, 1)); },
             {leaf({2, 2, 5, 6}, 40)});
       }},
      {"avg_pool2d",
       [] {
         Pool2dOptions o = Pool2dOptions::make(3, 2, 1, true);
         o.count_include_pad = false;
         auto r = gradcheck([&](const auto& in) { return avg_pool2d(in[0], o); },
                            {leaf({2, 2, 6, 5}, 41)});
         if (!r) return r;
         return gradcheck(
             [](const auto& in) { return avg_pool2d(in[0], Pool2dOptions::make(2)); },
             {leaf({1, 3, 4, 4}, 42)});
       }},
      {"adaptive_avg_pool2d",
       [] {
         auto r = gradcheck([](const auto& in) { return adaptive_avg_pool2d(in[0], 3, 2); },
                            {leaf({2, 3, 7, 5}, 43)});
         if (!r) return r;
         return gradcheck([](const auto& in) { return global_avg_pool2d(in[0]); },
                          {leaf({2, 3, 4, 4}, 44)});
       }},
      {"softmax",
       [] {
         return gradcheck([](const auto& in) { return softmax(in[0], 2.0); },
                          {leaf({3, 5}, 45, -3.0, 3.0)});
       }},
      {"log_softmax",
       [] {
         return gradcheck([](const auto& in) { return log_softmax(in[0], 4.0); },
                          {leaf({2, 3, 5}, 46, -3.0, 3.0)});
       }},
      {"cross_entropy",
       [] {
         Tensor labels = Tensor::from_vector<int64_t>({0, 4, 2, 2}, {4});
         auto r = gradcheck([&](const auto& in) { return cross_entropy(in[0], labels); },
                            {leaf({4, 5}, 47, -3.0, 3.0)});
         if (!r) return r;
         return gradcheck(
             [&](const auto& in) { return cross_entropy(in[0], labels, Reduction::none); },
             {leaf({4, 5}, 48, -3.0, 3.0)});
       }},
      {"kd_divergence",
       [] {
         Tensor teacher = leaf({4, 5}, 49, -5.0, 5.0, false);
         auto r = gradcheck([&](const auto& in) { return kd_divergence(in[0], teacher, 4.0); },
                            {leaf({4, 5}, 50, -5.0, 5.0)});
         if (!r) return r;
         return gradcheck([&](const auto& in) { return kd_loss(in[0], teacher, 1.5); },
                          {leaf({4, 5}, 51, -5.0, 5.0)});
       }},
      {"reshape",
       [] {
         return gradcheck([](const auto& in) { return in[0].reshape({3, -1}) * in[1]; },
                          {leaf({2, 3, 2}, 52), leaf({3, 4}, 53)});
       }},
      {"narrow",
       [] {
         return gradcheck([](const auto& in) { return in[0].narrow(1, 1, 2).narrow(0, 0, 1); },
                          {leaf({2, 4, 3}, 54)});
       }},
      {"transpose",
       [] {
         return gradcheck([](const auto& in) { return matmul(in[0].transpose(0, 1), in[1]); },
                          {leaf({4, 3}, 55), leaf({4, 2}, 56)});
       }},
      {"copy",
       [] {
         return gradcheck([](const auto& in) { return in[0].transpose(0, 2).contiguous() * 2.0; },
                          {leaf({2, 3, 4}, 57)});
       }},
  };
  return table;
}

TEST(Gradcheck, EveryDifferentiableOpHasACase) {
  for (const OpInfo& info : kOpTable) {
    if (!info.differentiable) continue;
    EXPECT_EQ(cases().count(std::string(info.name)), 1u)
        << "op '" << info.name << "' is differentiable but has no gradient check";
  }
  for (const auto& [name, check] : cases()) {
    bool known = false;
    for (const OpInfo& info : kOpTable) known = known || (info.name == name && info.differentiable);
    EXPECT_TRUE(known) << "gradient check '" << name << "' names no differentiable op";
  }
}

class GradcheckOp : public ::testing::TestWithParam<std::string> {};

TEST_P(GradcheckOp, MatchesFiniteDifferences) { EXPECT_TRUE(cases().at(GetParam())()); }

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& entry : cases()) names.push_back(entry.first);
  return names;
}

INSTANTIATE_TEST_SUITE_P(AllOps, GradcheckOp, ::testing::ValuesIn(case_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace retort::test
