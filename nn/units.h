// Conv -> BN -> ReLU units run with the fewest ops the layers allow: fused BN ops in training,
// one conv2d_fused when the pair is folded.
#pragma once

#include <functional>

#include "engine/tensor.h"

namespace retort::nn {

class Module;
class BatchNorm2d;
class Conv2d;
class SlimmableConv2d;
class SwitchableBatchNorm2d;

// relu(bn(conv(x))), the same result as bn.forward_relu(conv(x)). Folded (nn/fold.h) with no
// forward hook on either layer: one conv2d_fused (folded weight and bias, ReLU in the conv's
// epilogue) and neither layer's forward runs. Otherwise exactly bn.forward_relu(conv(x)).
Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x);
Tensor conv_bn_relu(SlimmableConv2d& conv, SwitchableBatchNorm2d& bn, const Tensor& x);

// relu(bn(conv(x)) + shortcut()), a residual block's last unit; shortcut() is called once. With
// no forward hook on either layer: folded, shortcut() then one conv2d_fused (folded bias, the
// shortcut and the ReLU in the conv's epilogue); unfolded, conv(x), shortcut(), then
// bn.forward_add_relu (one batch_norm_add_relu). With a hook, the separate ops in the plain block's
// order (conv, bn, shortcut, add, relu), so every hook sees what it would without fusion.
Tensor conv_bn_add_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x,
                        const std::function<Tensor()>& shortcut);
Tensor conv_bn_add_relu(SlimmableConv2d& conv, SwitchableBatchNorm2d& bn, const Tensor& x,
                        const std::function<Tensor()>& shortcut);

// For a Sequential's children: when conv, bn and relu are a Conv2d, a BatchNorm2d and a ReLU (or a
// SlimmableConv2d, a SwitchableBatchNorm2d and a ReLU) and none has a forward hook, the three as
// one unit through conv_bn_relu into *out, and true; otherwise false and nothing runs.
bool try_conv_bn_relu(Module& conv, Module& bn, Module& relu, const Tensor& x, Tensor* out);

}  // namespace retort::nn
