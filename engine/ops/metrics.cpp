// Step statistics kept on the device: in-place accumulation and top-1 counting.
#include "kernels/elementwise.h"
#include "kernels/metrics.h"

#include "engine/ops/common.h"

namespace retort {

void accumulate_(Tensor& dst, const Tensor& src_in) {
  ops_detail::check_floating(dst, "accumulate_", "dst");
  ops_detail::check_floating(src_in, "accumulate_", "src");
  check_same_device_dtype(dst, src_in, "accumulate_");
  if (dst.shape() != src_in.shape() || !dst.is_contiguous()) {
    throw std::invalid_argument("accumulate_: dst " + dst.str() + " must be contiguous and of the "
                                "shape of src " + src_in.str());
  }
  if (dst.requires_grad()) {
    throw std::invalid_argument("accumulate_: dst " + dst.str() + " requires grad; in-place "
                                "accumulation is for statistics outside autograd");
  }
  const Tensor src = src_in.contiguous();
  dispatch<OpId::add>(dst.device(), dst.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::accumulate(ctx, dst.numel(), src.data<T>(), dst.data<T>());
  });
}

void count_top1_(Tensor& correct, const Tensor& logits_in, const Tensor& labels_in) {
  ops_detail::check_floating(logits_in, "count_top1_", "logits");
  check_defined(labels_in, "count_top1_", "labels");
  check_defined(correct, "count_top1_", "correct");
  if (logits_in.dim() != 2 || labels_in.dim() != 1 || labels_in.size(0) != logits_in.size(0) ||
      labels_in.dtype() != DType::i64) {
    throw std::invalid_argument("count_top1_: needs logits (N, C) and i64 labels (N), got " +
                                logits_in.str() + " and " + labels_in.str());
  }
  if (correct.dtype() != DType::i64 || correct.numel() != 1) {
    throw std::invalid_argument("count_top1_: correct must be a one-element i64 tensor, got " +
                                correct.str());
  }
  if (labels_in.device() != logits_in.device() || correct.device() != logits_in.device()) {
    throw std::invalid_argument("count_top1_: logits on " + logits_in.device().str() +
                                ", labels on " + labels_in.device().str() + ", counter on " +
                                correct.device().str() + ": all must be on one device");
  }
  const Tensor logits = logits_in.contiguous(), labels = labels_in.contiguous();
  const int64_t n = logits.size(0), c = logits.size(1);
  dispatch<OpId::count_top1>(logits.device(), logits.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::count_top1(ctx, n, c, logits.data<T>(), labels.data<int64_t>(),
                        correct.data<int64_t>());
  });
}

}  // namespace retort
