// The layers: construction (shapes, PyTorch default init) and forward passes over the engine's ops.
#include "nn/layers.h"

#include <stdexcept>

#include "nn/fold.h"
#include "nn/init.h"
#include "nn/slimmable.h"
#include "nn/units.h"

namespace retort::nn {
namespace {

void require_positive(int64_t value, const char* layer, const char* what) {
  if (value < 1) {
    throw std::invalid_argument(std::string(layer) + ": " + what + " must be >= 1, got " +
                                std::to_string(value));
  }
}

}  // namespace

// --- Conv2d
// ---------------------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Generator& gen,
               const Conv2dConfig& config)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      config_(config) {
  require_positive(in_channels, "Conv2d", "in_channels");
  require_positive(out_channels, "Conv2d", "out_channels");
  require_positive(kernel_size, "Conv2d", "kernel_size");
  require_positive(config.stride, "Conv2d", "stride");
  require_positive(config.groups, "Conv2d", "groups");
  if (config.padding < 0) throw std::invalid_argument("Conv2d: padding must be >= 0");
  if (in_channels % config.groups != 0 || out_channels % config.groups != 0) {
    throw std::invalid_argument("Conv2d: in_channels " + std::to_string(in_channels) +
                                " and out_channels " + std::to_string(out_channels) +
                                " must both be divisible by groups " +
                                std::to_string(config.groups));
  }
  weight_ = register_parameter("weight", Tensor::empty({out_channels, in_channels / config.groups,
                                                        kernel_size, kernel_size}));
  if (config.bias) bias_ = register_parameter("bias", Tensor::empty({out_channels}));
  init::torch_default_(weight_, bias_, gen);
}

Tensor Conv2d::forward(const Tensor& x) {
  if (fold_) {
    if (const FoldedConv* folded = fold_->conv_forward()) {
      return conv2d(x, folded->weight, folded->bias, folded->options);
    }
  }
  return conv2d(x, weight_, bias_, op_options());
}

// --- BatchNorm2d
// ----------------------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps, double momentum)
    : num_features_(num_features), eps_(eps), momentum_(momentum) {
  require_positive(num_features, "BatchNorm2d", "num_features");
  weight_ = register_parameter("weight", Tensor::ones({num_features}));
  bias_ = register_parameter("bias", Tensor::zeros({num_features}));
  running_mean_ = register_buffer("running_mean", Tensor::zeros({num_features}));
  running_var_ = register_buffer("running_var", Tensor::ones({num_features}));
  num_batches_tracked_ = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::i64),
                                         /*follows_device=*/false);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  // Folded: the conv before this BN already computed BN(conv(x)).
  if (fold_ && fold_->bn_forward_is_identity()) return x;
  const bool training = is_training();
  Tensor y = batch_norm(x, weight_, bias_, running_mean_, running_var_, training, momentum_, eps_);
  count_batch(training);
  return y;
}

Tensor BatchNorm2d::forward_relu(const Tensor& x) {
  if (fold_ && fold_->bn_forward_is_identity()) {
    run_forward_hooks(x, x);
    return relu(x);
  }
  const bool training = is_training();
  Tensor y =
      batch_norm_relu(x, weight_, bias_, running_mean_, running_var_, training, momentum_, eps_);
  count_batch(training);
  run_forward_hooks(x, y);
  return y;
}

Tensor BatchNorm2d::forward_add_relu(const Tensor& x, const Tensor& residual) {
  if (fold_ && fold_->bn_forward_is_identity()) {
    run_forward_hooks(x, x);
    return relu(add(x, residual));
  }
  const bool training = is_training();
  Tensor y = batch_norm_add_relu(x, residual, weight_, bias_, running_mean_, running_var_,
                                 training, momentum_, eps_);
  count_batch(training);
  run_forward_hooks(x, y);
  return y;
}

void BatchNorm2d::count_batch(bool training) {
  // After the op succeeded, so a rejected input does not count as a batch; the running
  // statistics moved, so caches of them (a BN fold) must see a new state version.
  if (training) {
    ++*num_batches_tracked_.data<int64_t>();
    bump_state_version();
  }
}

int64_t BatchNorm2d::num_batches_tracked() const {
  return *num_batches_tracked_.data<int64_t>();
}

// --- Linear
// ---------------------------------------------------------------------------------------

Linear::Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias)
    : in_features_(in_features), out_features_(out_features) {
  require_positive(in_features, "Linear", "in_features");
  require_positive(out_features, "Linear", "out_features");
  weight_ = register_parameter("weight", Tensor::empty({out_features, in_features}));
  if (bias) bias_ = register_parameter("bias", Tensor::empty({out_features}));
  init::torch_default_(weight_, bias_, gen);
}

Tensor Linear::forward(const Tensor& x) {
  return linear(x, weight_, bias_);
}

// --- containers
// -------------------------------------------------------------------------------------

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> module) {
  register_module(std::to_string(size()), std::move(module));
}

const std::shared_ptr<Module>& Sequential::at(size_t index) const {
  if (index >= size()) {
    throw std::out_of_range("Sequential::at: index " + std::to_string(index) + " of " +
                            std::to_string(size()));
  }
  return named_children()[index].second;
}

void Sequential::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  const auto& children = named_children();
  for (size_t i = 0; i + 1 < children.size(); ++i) {
    auto* conv = dynamic_cast<Conv2d*>(children[i].second.get());
    Module* next = children[i + 1].second.get();
    const bool next_is_bn = dynamic_cast<BatchNorm2d*>(next) != nullptr ||
                            dynamic_cast<SwitchableBatchNorm2d*>(next) != nullptr;
    if (conv != nullptr && next_is_bn) out.push_back({conv, next});
  }
  Module::collect_conv_bn_pairs(out);
}

Tensor Sequential::forward(const Tensor& x) {
  // Children conv -> BN -> ReLU with no hooks run as one unit (nn/units.h): fused BN and ReLU,
  // or one conv2d_fused when folded.
  const auto& children = named_children();
  Tensor out = x;
  for (size_t i = 0; i < children.size(); ++i) {
    if (i + 2 < children.size() && try_conv_bn_relu(*children[i].second, *children[i + 1].second,
                                                    *children[i + 2].second, out, &out)) {
      i += 2;
      continue;
    }
    out = (*children[i].second)(out);
  }
  return out;
}

void ModuleList::push_back(std::shared_ptr<Module> module) {
  register_module(std::to_string(size()), std::move(module));
}

const std::shared_ptr<Module>& ModuleList::at(size_t index) const {
  if (index >= size()) {
    throw std::out_of_range("ModuleList::at: index " + std::to_string(index) + " of " +
                            std::to_string(size()));
  }
  return named_children()[index].second;
}

Tensor ModuleList::forward(const Tensor&) {
  throw std::logic_error("ModuleList has no forward: call its modules (at(i)) instead");
}

}  // namespace retort::nn
