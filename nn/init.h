// Parameter initialisers (in place, seeded from a Generator) and PyTorch's fan-in / fan-out rules.
#pragma once

#include <cstdint>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace retort::nn::init {

// For a weight of shape (out, in, k...) as torch.nn.init._calculate_fan_in_and_fan_out:
// fan_in = in * prod(k), fan_out = out * prod(k). Throws for fewer than 2 dimensions.
int64_t fan_in(const Tensor& weight);
int64_t fan_out(const Tensor& weight);

// Each fills `t` in place (any device and dtype) from `gen`, outside autograd.
void uniform_(const Tensor& t, double low, double high, Generator& gen);
void normal_(const Tensor& t, double mean, double std, Generator& gen);
void constant_(const Tensor& t, double value);
// kaiming_normal_(mode='fan_out', nonlinearity='relu'): normal(0, sqrt(2 / fan_out)). For a conv
// weight this is normal(0, sqrt(2 / (k*k*out_channels))), the WRN / MobileNetV2 rule as well.
void kaiming_normal_fan_out_(const Tensor& weight, Generator& gen);
// PyTorch's default for Conv2d and Linear (kaiming_uniform_ with a = sqrt(5)):
// weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). `bias` may be undefined.
void torch_default_(const Tensor& weight, const Tensor& bias, Generator& gen);

}  // namespace retort::nn::init
