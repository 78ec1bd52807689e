// Classification metrics: top-k counting on host copies of the logits.
#include "nn/metrics.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace retort::nn {

int64_t count_correct(const Tensor& logits, const Tensor& labels, int64_t k) {
  check_defined(logits, "count_correct", "logits");
  check_defined(labels, "count_correct", "labels");
  if (logits.dim() != 2 || labels.dim() != 1 || labels.size(0) != logits.size(0)) {
    throw std::invalid_argument("count_correct: needs logits (N, C) and labels (N), got " +
                                shape_str(logits.shape()) + " and " + shape_str(labels.shape()));
  }
  if (labels.dtype() != DType::i64) {
    throw std::invalid_argument("count_correct: labels must be i64, got " +
                                std::string(dtype_name(labels.dtype())));
  }
  if (k < 1) throw std::invalid_argument("count_correct: k must be >= 1, got " + std::to_string(k));
  const int64_t n = logits.size(0), c = logits.size(1);
  const std::vector<double> values =
      (logits.dtype() == DType::f64 ? logits : logits.to(DType::f64)).to_vector<double>();
  const std::vector<int64_t> y = labels.to_vector<int64_t>();
  k = std::min(k, c);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = y[static_cast<size_t>(i)];
    if (label < 0 || label >= c) {
      throw std::invalid_argument("count_correct: label " + std::to_string(label) + " of row " +
                                  std::to_string(i) + " is outside [0, " + std::to_string(c) + ")");
    }
    const double* row = values.data() + i * c;
    const double target = row[label];
    if (std::isnan(target)) continue;
    int64_t rank = 0;  // classes that sort before the label
    for (int64_t j = 0; j < c && rank < k; ++j) {
      if (row[j] > target || (j < label && row[j] == target)) ++rank;
    }
    if (rank < k) ++correct;
  }
  return correct;
}

}  // namespace retort::nn
