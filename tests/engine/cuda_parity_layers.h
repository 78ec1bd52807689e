// The engine-level CPU-vs-CUDA parity sweeps of the layer ops (convolution, normalisation,
// pooling), included by cuda_ops_test.cpp, whose case table runs them.
#pragma once

#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/tensor.h"
#include "tests/engine/cuda_parity.h"

namespace retort::test {

inline void conv2d_sweep() {
  struct Case {
    const char* name;
    Shape x, w;
    Conv2dOptions o;
    bool bias = true, x_grad = true, w_grad = true;
  };
  const Case cases[] = {
      {"3x3 pad 1", {2, 4, 8, 8}, {6, 4, 3, 3}, Conv2dOptions::make(1, 1)},
      {"3x3 stride 2 odd", {2, 4, 9, 9}, {6, 4, 3, 3}, Conv2dOptions::make(2, 1), false},
      {"1x1 projection stride 2", {2, 8, 7, 7}, {16, 8, 1, 1}, Conv2dOptions::make(2, 0), false},
      {"1x1 stride 1", {3, 5, 4, 6}, {7, 5, 1, 1}, Conv2dOptions::make(1, 0)},
      {"depthwise 7x5", {2, 6, 7, 5}, {6, 1, 3, 3}, Conv2dOptions::make(1, 1, 6)},
      {"depthwise s2 batch 1", {1, 8, 9, 7}, {8, 1, 3, 3}, Conv2dOptions::make(2, 1, 8), false},
      {"depthwise multiplier 2", {2, 3, 6, 5}, {6, 1, 3, 3}, Conv2dOptions::make(1, 1, 3)},
      {"grouped", {2, 4, 5, 6}, {6, 2, 3, 3}, Conv2dOptions::make(2, 1, 2)},
      {"batch 1 odd 7x5", {1, 3, 7, 5}, {5, 3, 3, 3}, Conv2dOptions::make(1, 1)},
      {"5x5 pad 2", {2, 3, 11, 9}, {4, 3, 5, 5}, Conv2dOptions::make(1, 2)},
      {"1x2 kernel, 2x1 stride", {1, 2, 7, 5}, {3, 2, 1, 2}, {2, 1, 0, 1, 1}, false},
      {"w grad only", {2, 3, 6, 6}, {4, 3, 3, 3}, Conv2dOptions::make(1, 1), true, false},
      {"x grad only", {2, 3, 6, 6}, {4, 3, 3, 3}, Conv2dOptions::make(2, 1), true, true, false},
  };
  for (const Case& c : cases) {
    const Tensor x = uniform(c.x, 700, -1.0, 1.0, c.x_grad),
                 w = uniform(c.w, 701, -1.0, 1.0, c.w_grad);
    const std::vector<Tensor> inputs =
        c.bias ? std::vector<Tensor>{x, w, uniform({c.w[0]}, 702)} : std::vector<Tensor>{x, w};
    const Conv2dOptions o = c.o;
    expect_parity(
        cat("conv2d ", c.name, " x ", shape_str(c.x), " w ", shape_str(c.w)),
        [o](const auto& in) { return conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), o); },
        inputs);
  }
}

// conv2d_fused over a few of conv2d's geometries (float4 and scalar epilogue paths), each
// activation, with and without bias and residual; residuals in (-3, 9) reach past relu6's 6.
inline void conv2d_fused_sweep() {
  struct Case {
    const char* name;
    Shape x, w, y;
    Conv2dOptions o;
  };
  const Case cases[] = {
      {"3x3 pad 1", {2, 4, 8, 8}, {6, 4, 3, 3}, {2, 6, 8, 8}, Conv2dOptions::make(1, 1)},
      {"3x3 stride 2 odd", {2, 4, 9, 9}, {6, 4, 3, 3}, {2, 6, 5, 5}, Conv2dOptions::make(2, 1)},
      {"1x1 stride 1", {3, 5, 4, 6}, {7, 5, 1, 1}, {3, 7, 4, 6}, Conv2dOptions::make(1, 0)},
      {"depthwise 7x5", {2, 6, 7, 5}, {6, 1, 3, 3}, {2, 6, 7, 5}, Conv2dOptions::make(1, 1, 6)},
      {"grouped", {2, 4, 5, 6}, {6, 2, 3, 3}, {2, 6, 3, 3}, Conv2dOptions::make(2, 1, 2)},
  };
  const std::pair<Activation, const char*> activations[] = {
      {Activation::none, "none"}, {Activation::relu, "relu"}, {Activation::relu6, "relu6"}};
  for (const Case& c : cases) {
    for (const auto& [act, act_name] : activations) {
      for (const int mask : {0, 1, 2, 3}) {
        const bool has_bias = mask & 1, has_residual = mask & 2;
        std::vector<Tensor> inputs = {uniform(c.x, 710), uniform(c.w, 711)};
        if (has_bias) inputs.push_back(uniform({c.w[0]}, 712));
        if (has_residual) inputs.push_back(uniform(c.y, 713, -3.0, 9.0));
        const Conv2dOptions o = c.o;
        expect_parity(
            cat("conv2d_fused ", c.name, " ", act_name, has_bias ? " bias" : "",
                has_residual ? " residual" : ""),
            [o, act = act, has_bias, has_residual](const auto& in) {
              size_t k = 2;
              const Tensor b = has_bias ? in[k++] : Tensor();
              const Tensor r = has_residual ? in[k++] : Tensor();
              return conv2d_fused(in[0], in[1], b, r, act, o);
            },
            inputs);
      }
    }
  }
}

// Training: batch statistics in the output and gradients, and the running statistics updated
// in place on both devices. Evaluation: the running statistics, which must stay as they were.
// With relu, the same through batch_norm_relu.
inline void batch_norm_sweep(bool training, bool relu = false) {
  const auto op = relu ? &batch_norm_relu : &batch_norm;
  const std::string mode =
      cat(relu ? "batch_norm_relu" : "batch_norm", training ? " train " : " eval ");
  const Shape shapes[] = {{4, 3, 5, 7}, {6, 5}, {1, 4, 3, 3}, {2, 3, 1, 1}, {8, 16, 2, 2}};
  for (const Shape& s : shapes) {
    const int64_t c = s[1];
    const ParityRun run =
        expect_parity(cat(mode, shape_str(s)),
                      [training, op](const auto& in) {
                        return op(in[0], in[1], in[2], in[3], in[4], training, 0.1, 1e-5);
                      },
                      {uniform(s, 800, -2.0, 3.0), uniform({c}, 801, 0.5, 1.5), uniform({c}, 802),
                       constant({c}, 803, -0.5, 0.5), constant({c}, 804, 0.5, 1.5)});
    if (run.gpu.size() == 5) {
      EXPECT_TRUE(matches_cpu(run.gpu[3], run.cpu[3])) << mode << shape_str(s) << " running_mean";
      EXPECT_TRUE(matches_cpu(run.gpu[4], run.cpu[4])) << mode << shape_str(s) << " running_var";
    }
  }
  if (training) {
    expect_parity(cat(mode, "without running statistics"),
                  [op](const auto& in) {
                    return op(in[0], in[1], in[2], Tensor(), Tensor(), true, 0.1, 1e-5);
                  },
                  {uniform({5, 4, 3, 2}, 805), uniform({4}, 806), uniform({4}, 807)});
  }
  const ParityRun plain = expect_parity(
      cat(mode, "without weight and bias, momentum 0.3"),
      [training, op](const auto& in) {
        return op(in[0], Tensor(), Tensor(), in[1], in[2], training, 0.3, 1e-3);
      },
      {uniform({3, 6, 4, 5}, 808), constant({6}, 809, -0.5, 0.5), constant({6}, 810, 0.5, 1.5)});
  if (plain.gpu.size() == 3) {
    EXPECT_TRUE(matches_cpu(plain.gpu[1], plain.cpu[1])) << mode << "running_mean";
    EXPECT_TRUE(matches_cpu(plain.gpu[2], plain.cpu[2])) << mode << "running_var";
  }
}

// batch_norm_add_relu: the residual's gradient besides x's, weight's and bias's; the running
// statistics updated as batch_norm's.
inline void batch_norm_add_relu_sweep(bool training) {
  const std::string mode = cat("batch_norm_add_relu", training ? " train " : " eval ");
  const Shape shapes[] = {{4, 3, 5, 7}, {6, 5}, {1, 4, 3, 3}, {8, 16, 4, 4}};
  for (const Shape& s : shapes) {
    const int64_t c = s[1];
    const ParityRun run = expect_parity(
        cat(mode, shape_str(s)),
        [training](const auto& in) {
          return batch_norm_add_relu(in[0], in[5], in[1], in[2], in[3], in[4], training, 0.1,
                                     1e-5);
        },
        {uniform(s, 820, -2.0, 3.0), uniform({c}, 821, 0.5, 1.5), uniform({c}, 822),
         constant({c}, 823, -0.5, 0.5), constant({c}, 824, 0.5, 1.5), uniform(s, 825)});
    if (run.gpu.size() == 6) {
      EXPECT_TRUE(matches_cpu(run.gpu[3], run.cpu[3])) << mode << shape_str(s) << " running_mean";
      EXPECT_TRUE(matches_cpu(run.gpu[4], run.cpu[4])) << mode << shape_str(s) << " running_var";
    }
  }
}

// Both window pools over one list: odd planes, padding, stride 1, ceil mode, a 1x1 plane, and
// (average only) a window that excludes the padding from its count.
inline void pool_sweep(bool max) {
  Pool2dOptions exclude_pad = Pool2dOptions::make(3, 2, 1, true);
  exclude_pad.count_include_pad = false;
  struct Case {
    Shape x;
    Pool2dOptions o;
  };
  const Case cases[] = {{{2, 3, 7, 5}, Pool2dOptions::make(3, 2, 1)},
                        {{1, 4, 8, 6}, Pool2dOptions::make(2)},
                        {{2, 2, 7, 7}, Pool2dOptions::make(3, 2, 0, true)},
                        {{2, 3, 5, 9}, Pool2dOptions::make(3, 1, 1)},
                        {{2, 2, 9, 7}, Pool2dOptions::make(3, 2, 1, true)},
                        {{1, 1, 1, 1}, Pool2dOptions::make(1)},
                        {{2, 2, 6, 5}, exclude_pad}};
  for (const Case& c : cases) {
    const Pool2dOptions o = c.o;
    if (max && !o.count_include_pad) continue;
    expect_parity(
        cat(max ? "max_pool2d " : "avg_pool2d ", shape_str(c.x), " kernel ", o.kernel_h, " stride ",
            o.stride_h, " pad ", o.pad_h, o.ceil_mode ? " ceil" : "",
            o.count_include_pad ? "" : " exclude pad"),
        [o, max](const auto& in) { return max ? max_pool2d(in[0], o) : avg_pool2d(in[0], o); },
        {uniform(c.x, 900)});
  }
}

inline void adaptive_pool_sweep() {
  struct Case {
    Shape x;
    int64_t out_h, out_w;
  };
  const Case cases[] = {
      {{2, 3, 7, 5}, 3, 2}, {{1, 4, 5, 5}, 1, 1}, {{2, 2, 9, 6}, 4, 4}, {{1, 2, 7, 5}, 7, 5}};
  for (const Case& c : cases) {
    expect_parity(cat("adaptive_avg_pool2d ", shape_str(c.x), " to ", c.out_h, "x", c.out_w),
                  [c](const auto& in) { return adaptive_avg_pool2d(in[0], c.out_h, c.out_w); },
                  {uniform(c.x, 920)});
  }
  for (const Shape& s : {Shape{2, 8, 7, 5}, Shape{1, 3, 1, 1}, Shape{3, 16, 4, 4}}) {
    expect_parity(cat("global_avg_pool2d ", shape_str(s)),
                  [](const auto& in) { return global_avg_pool2d(in[0]); }, {uniform(s, 930)});
  }
}

// --- softmax family and losses ---------------------------------------------------------------

}  // namespace retort::test
