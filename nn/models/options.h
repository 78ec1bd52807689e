// ModelOptions: what every model of the registry is built from (input channels, classes, seed).
#pragma once

#include <cstdint>

namespace retort::nn {

struct ModelOptions {
  int64_t in_channels = 3;    // 3 for CIFAR, 1 for (Fashion-)MNIST: changes only the stem
  int64_t num_classes = 100;  // changes only the classifier
  uint64_t seed = 0;          // drives every initial weight (retort::Generator)
};

}  // namespace retort::nn
