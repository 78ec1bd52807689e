// Conv -> BN -> ReLU units: the folded one-op path, the fused-BN path and the hooked plain path.
#include "nn/units.h"

#include "engine/ops.h"
#include "nn/fold.h"
#include "nn/layers.h"
#include "nn/slimmable.h"

namespace retort::nn {
namespace {

bool hooked(const BatchNorm2d& bn) {
  return bn.has_forward_hooks();
}
bool hooked(const SwitchableBatchNorm2d& bn) {
  return bn.has_forward_hooks() || bn.bn_at(bn.width_switch()->index()).has_forward_hooks();
}

// The folded conv when conv is folded with this very bn and the fold may run the unit as one op.
const FoldedConv* folded_unit(Conv2d& conv, const Module& bn) {
  ConvBnFold* fold = conv.fold();
  if (fold == nullptr || &fold->bn() != &bn) return nullptr;
  return fold->unit_forward();
}

template <class Conv, class Bn>
Tensor conv_bn_relu_impl(Conv& conv, Bn& bn, const Tensor& x) {
  if (const FoldedConv* folded = folded_unit(conv, bn)) {
    return conv2d_fused(x, folded->weight, folded->bias, Tensor(), Activation::relu,
                        folded->options);
  }
  return bn.forward_relu(conv(x));
}

template <class Conv, class Bn>
Tensor conv_bn_add_relu_impl(Conv& conv, Bn& bn, const Tensor& x,
                             const std::function<Tensor()>& shortcut) {
  if (const FoldedConv* folded = folded_unit(conv, bn)) {
    return conv2d_fused(x, folded->weight, folded->bias, shortcut(), Activation::relu,
                        folded->options);
  }
  if (conv.has_forward_hooks() || hooked(bn)) {
    const Tensor out = bn(conv(x));
    return relu(add(out, shortcut()));
  }
  const Tensor out = conv(x);
  return bn.forward_add_relu(out, shortcut());
}

}  // namespace

Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x) {
  return conv_bn_relu_impl(conv, bn, x);
}

Tensor conv_bn_relu(SlimmableConv2d& conv, SwitchableBatchNorm2d& bn, const Tensor& x) {
  return conv_bn_relu_impl(conv, bn, x);
}

Tensor conv_bn_add_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x,
                        const std::function<Tensor()>& shortcut) {
  return conv_bn_add_relu_impl(conv, bn, x, shortcut);
}

Tensor conv_bn_add_relu(SlimmableConv2d& conv, SwitchableBatchNorm2d& bn, const Tensor& x,
                        const std::function<Tensor()>& shortcut) {
  return conv_bn_add_relu_impl(conv, bn, x, shortcut);
}

bool try_conv_bn_relu(Module& conv, Module& bn, Module& relu, const Tensor& x, Tensor* out) {
  if (dynamic_cast<ReLU*>(&relu) == nullptr || relu.has_forward_hooks()) return false;
  if (conv.has_forward_hooks()) return false;
  if (auto* slimmable = dynamic_cast<SlimmableConv2d*>(&conv)) {
    auto* switchable = dynamic_cast<SwitchableBatchNorm2d*>(&bn);
    if (switchable == nullptr || hooked(*switchable)) return false;
    *out = conv_bn_relu(*slimmable, *switchable, x);
    return true;
  }
  auto* plain_conv = dynamic_cast<Conv2d*>(&conv);
  auto* plain_bn = dynamic_cast<BatchNorm2d*>(&bn);
  if (plain_conv == nullptr || plain_bn == nullptr || hooked(*plain_bn)) return false;
  *out = conv_bn_relu(*plain_conv, *plain_bn, x);
  return true;
}

}  // namespace retort::nn
