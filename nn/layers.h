// The layers: Conv2d, BatchNorm2d, Linear, activations, pooling, Flatten, Sequential, ModuleList.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/rng.h"
#include "nn/module.h"

namespace retort::nn {

class ConvBnFold;

// --- Conv2d
// ---------------------------------------------------------------------------------------

struct Conv2dConfig {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t groups = 1;
  bool bias = false;  // the CIFAR models never use a conv bias
};

// weight (out, in / groups, k, k) [+ bias (out)], initialised with PyTorch's default from `gen`.
// Members are protected so a slimmable variant can derive from it and run on the leading
// channels of its weight (weight_.narrow(0, 0, out_k).narrow(1, 0, in_k)).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Generator& gen,
         const Conv2dConfig& config = {});
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Conv2d"; }

  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t kernel_size() const { return kernel_size_; }
  const Conv2dConfig& config() const { return config_; }
  Conv2dOptions op_options() const {
    return Conv2dOptions::make(config_.stride, config_.padding, config_.groups);
  }
  // The BN fold this conv belongs to while a BatchNormFold holds it (nn/fold.h), else null.
  ConvBnFold* fold() const { return fold_.get(); }

 protected:
  int64_t in_channels_, out_channels_, kernel_size_;
  Conv2dConfig config_;
  Tensor weight_, bias_;
  // Set while this conv is folded with the BN after it (nn/fold.h); forward asks it first.
  std::shared_ptr<ConvBnFold> fold_;

 private:
  friend class ConvBnFold;
};

// --- BatchNorm2d
// ----------------------------------------------------------------------------------

// weight (C) = 1, bias (C) = 0; buffers running_mean (C) = 0, running_var (C) = 1 and
// num_batches_tracked (i64 scalar, host memory) as torch.nn.BatchNorm2d. Training: batch
// statistics, running statistics updated with `momentum` (unbiased variance, as PyTorch) and the
// counter incremented; evaluation: running statistics. Also accepts (N, C) input.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;
  // relu((*this)(x)) in one op (batch_norm_relu), for a conv-BN-ReLU unit: the same result,
  // gradients, running-statistics update and counter. Folded (nn/fold.h), relu(x). Runs this
  // module's forward hooks as operator() would, with the ReLU's output as output (x itself when
  // folded, as forward returns).
  Tensor forward_relu(const Tensor& x);
  // relu((*this)(x) + residual) in one op (batch_norm_add_relu), for a residual block's last
  // unit: residual is shaped as x. Hooks and folding as forward_relu (folded: relu(x + residual)).
  Tensor forward_add_relu(const Tensor& x, const Tensor& residual);
  std::string type_name() const override { return "BatchNorm2d"; }

  int64_t num_features() const { return num_features_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  const Tensor& running_mean() const { return running_mean_; }
  const Tensor& running_var() const { return running_var_; }
  int64_t num_batches_tracked() const;

 protected:
  int64_t num_features_;
  double eps_, momentum_;
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
  // Set while this BN is folded into the conv before it (nn/fold.h): when that conv ran folded,
  // forward returns its input.
  std::shared_ptr<ConvBnFold> fold_;

 private:
  friend class ConvBnFold;
  void count_batch(bool training);  // after a forward's op: counter and state version
};

// --- Linear
// ---------------------------------------------------------------------------------------

// weight (out, in) [+ bias (out)], PyTorch's default init U(-1/sqrt(in), 1/sqrt(in)) from `gen`.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Linear"; }

  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 protected:
  int64_t in_features_, out_features_;
  Tensor weight_, bias_;
};

// --- parameter-free layers
// --------------------------------------------------------------------------

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

class ReLU6 : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu6(x); }
  std::string type_name() const override { return "ReLU6"; }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const Pool2dOptions& options) : options_(options) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, options_); }
  std::string type_name() const override { return "MaxPool2d"; }

 private:
  Pool2dOptions options_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(const Pool2dOptions& options) : options_(options) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, options_); }
  std::string type_name() const override { return "AvgPool2d"; }

 private:
  Pool2dOptions options_;
};

class AdaptiveAvgPool2d : public Module {
 public:
  AdaptiveAvgPool2d(int64_t out_h, int64_t out_w) : out_h_(out_h), out_w_(out_w) {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, out_h_, out_w_); }
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }

 private:
  int64_t out_h_, out_w_;
};

// (N, C, H, W) -> (N, C): AdaptiveAvgPool2d(1) followed by flatten, for any input size. The
// models use it where the reference has AvgPool2d(8) (ResNet, WRN) or AvgPool2d(2, ceil_mode)
// (MobileNetV2): identical on 32x32 inputs, and 28x28 inputs work too.
class GlobalAvgPool2d : public Module {
 public:
  Tensor forward(const Tensor& x) override { return global_avg_pool2d(x); }
  std::string type_name() const override { return "GlobalAvgPool2d"; }
};

// Flattens dimensions start_dim..end_dim (torch.nn.Flatten defaults: 1..-1).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : start_dim_(start_dim), end_dim_(end_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim_, end_dim_); }
  std::string type_name() const override { return "Flatten"; }

 private:
  int64_t start_dim_, end_dim_;
};

// --- containers
// -------------------------------------------------------------------------------------

// Children named "0", "1", ... in order; forward chains them.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }
  // Each child's output is the next child's only input, so a conv child directly followed by a
  // BN child (BatchNorm2d or SwitchableBatchNorm2d) is a foldable pair; then the children's own.
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;

  void push_back(std::shared_ptr<Module> module);
  size_t size() const { return named_children().size(); }
  const std::shared_ptr<Module>& at(size_t index) const;
};

// Children named "0", "1", ...; holds modules without running them (torch.nn.ModuleList).
class ModuleList : public Module {
 public:
  Tensor forward(const Tensor& x) override;  // throws: a ModuleList is not callable
  std::string type_name() const override { return "ModuleList"; }

  void push_back(std::shared_ptr<Module> module);
  size_t size() const { return named_children().size(); }
  const std::shared_ptr<Module>& at(size_t index) const;
};

}  // namespace retort::nn
