// Parameter initialisers: draws from Philox through Tensor::rand / randn, then copies in place.
#include "nn/init.h"

#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "nn/fold.h"

namespace retort::nn::init {
namespace {

int64_t receptive_field(const Tensor& weight, const char* what) {
  if (weight.dim() < 2) {
    throw std::invalid_argument(std::string(what) +
                                ": needs a weight with at least 2 dimensions, got " + weight.str());
  }
  int64_t r = 1;
  for (int64_t d = 2; d < weight.dim(); ++d) r *= weight.size(d);
  return r;
}

}  // namespace

int64_t fan_in(const Tensor& weight) {
  return weight.size(1) * receptive_field(weight, "fan_in");
}

int64_t fan_out(const Tensor& weight) {
  return weight.size(0) * receptive_field(weight, "fan_out");
}

void uniform_(const Tensor& t, double low, double high, Generator& gen) {
  NoGradGuard no_grad;
  Tensor target = t.detach();
  target.copy_(Tensor::rand(t.shape(), gen, low, high, t.dtype(), t.device()));
  note_tensor_written(t);
}

void normal_(const Tensor& t, double mean, double std, Generator& gen) {
  NoGradGuard no_grad;
  Tensor target = t.detach();
  target.copy_(Tensor::randn(t.shape(), gen, mean, std, t.dtype(), t.device()));
  note_tensor_written(t);
}

void constant_(const Tensor& t, double value) {
  Tensor target = t.detach();
  target.fill_(value);
  note_tensor_written(t);
}

void kaiming_normal_fan_out_(const Tensor& weight, Generator& gen) {
  normal_(weight, 0.0, std::sqrt(2.0 / static_cast<double>(fan_out(weight))), gen);
}

void torch_default_(const Tensor& weight, const Tensor& bias, Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in(weight)));
  uniform_(weight, -bound, bound, gen);
  if (bias.defined()) uniform_(bias, -bound, bound, gen);
}

}  // namespace retort::nn::init
