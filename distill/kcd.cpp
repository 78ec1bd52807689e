// KCD: the value statistics (E-step), the condensation schedule and the pixel summary (M-step).
#include "distill/kcd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "engine/ops.h"
#include "kernels/augment.h"

namespace retort::distill {
namespace {

// A 64-bit hash of the training pixels, eight bytes at a time (a multiply-xorshift mix): enough to
// tell a resumed run that it was handed pixels other than the ones the checkpoint describes.
uint64_t hash_bytes(const std::vector<uint8_t>& bytes) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = kMul ^ static_cast<uint64_t>(bytes.size());
  auto mix = [&](uint64_t word) {
    h = (h ^ word) * kMul;
    h ^= h >> 31;
  };
  const size_t n = bytes.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    mix(word);
  }
  uint64_t last = 0;
  for (size_t k = 0; i + k < n; ++k) last |= static_cast<uint64_t>(bytes[i + k]) << (8 * k);
  mix(last);
  return h;
}

// The order of the options in the checkpoint's "config" tensor, with the names used in messages.
constexpr const char* kConfigNames[] = {"training-set size", "period", "threshold", "n_steps",
                                        "alpha_f",           "f_ref",  "eps_max",   "mixing",
                                        "additive",          "nested", "warmup"};
constexpr size_t kConfigSize = sizeof(kConfigNames) / sizeof(kConfigNames[0]);

std::vector<double> config_values(const KcdOptions& o, int64_t n) {
  return {static_cast<double>(n),
          static_cast<double>(o.period),
          o.threshold,
          static_cast<double>(o.n_steps),
          o.alpha_f,
          o.f_ref,
          o.eps_max,
          o.mixing ? 1.0 : 0.0,
          o.additive ? 1.0 : 0.0,
          o.nested ? 1.0 : 0.0,
          static_cast<double>(o.warmup)};
}

const Tensor& state_at(const nn::NamedTensors& state, const std::string& name) {
  for (const auto& [key, t] : state) {
    if (key == name) return t;
  }
  throw std::runtime_error("KCD resume: the checkpoint's kcd state has no '" + name + "'");
}

bool state_has(const nn::NamedTensors& state, const std::string& name) {
  for (const auto& entry : state) {
    if (entry.first == name) return true;
  }
  return false;
}

// The named tensor as a host vector of `expected` elements (any count when expected < 0).
template <typename T>
std::vector<T> state_vector(const nn::NamedTensors& state, const std::string& name,
                            int64_t expected) {
  const Tensor& t = state_at(state, name);
  if (expected >= 0 && t.numel() != expected) {
    throw std::runtime_error("KCD resume: '" + name + "' holds " + std::to_string(t.numel()) +
                             " values, expected " + std::to_string(expected));
  }
  return t.to_vector<T>();
}

}  // namespace

int64_t kcd_default_period(int64_t epochs) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(epochs) / 6.0));
}

KcdOptions kcd_resolve(const KcdOptions& options, int64_t epochs) {
  if (epochs < 1) throw std::invalid_argument("KCD: the run needs at least one epoch");
  if (options.period < 0) throw std::invalid_argument("KCD: period must be >= 0 (0: automatic)");
  if (!(options.threshold > 0.0 && options.threshold <= 1.0)) {
    throw std::invalid_argument("KCD: threshold must be in (0, 1], got " +
                                std::to_string(options.threshold));
  }
  if (options.n_steps < 1) throw std::invalid_argument("KCD: n_steps must be >= 1");
  if (!std::isfinite(options.alpha_f)) throw std::invalid_argument("KCD: alpha_f must be finite");
  if (!(options.f_ref >= 0.0 && std::isfinite(options.f_ref))) {
    throw std::invalid_argument("KCD: f_ref must be >= 0 (0: the period)");
  }
  if (!(options.eps_max >= 0.0 && options.eps_max <= 1.0)) {
    throw std::invalid_argument("KCD: eps_max must be in [0, 1], got " +
                                std::to_string(options.eps_max));
  }
  if (options.warmup < 0) throw std::invalid_argument("KCD: warmup must be >= 0");
  KcdOptions r = options;
  if (r.period == 0) r.period = kcd_default_period(epochs);
  if (r.f_ref == 0.0) r.f_ref = static_cast<double>(r.period);
  return r;
}

bool kcd_condenses_after(int64_t epoch, int64_t epochs, int64_t period, int64_t warmup) {
  if (period < 1) throw std::invalid_argument("kcd_condenses_after: period must be >= 1");
  return epoch % period == 0 && epoch >= warmup && epoch < epochs;
}

int64_t kcd_step_size(int64_t n, double threshold, int64_t n_steps) {
  return static_cast<int64_t>(static_cast<double>(n) * (1.0 - threshold) /
                              static_cast<double>(n_steps));
}

int64_t kcd_floor_size(int64_t n, double threshold) {
  return static_cast<int64_t>(threshold * static_cast<double>(n));
}

int64_t kcd_next_kept(int64_t current, int64_t n, double threshold, int64_t n_steps) {
  const int64_t next =
      std::max(current - kcd_step_size(n, threshold, n_steps), kcd_floor_size(n, threshold));
  // Guard rails beyond the code: never grow, and never train on an empty set.
  return std::max<int64_t>(std::min(next, current), std::min<int64_t>(current, 1));
}

std::vector<int64_t> kcd_kept_sizes(int64_t n, int64_t epochs, int64_t period, double threshold,
                                    int64_t n_steps, int64_t warmup) {
  std::vector<int64_t> sizes(static_cast<size_t>(std::max<int64_t>(epochs, 0)));
  int64_t current = n;
  for (int64_t e = 1; e <= epochs; ++e) {
    sizes[e - 1] = current;
    if (kcd_condenses_after(e, epochs, period, warmup)) {
      current = kcd_next_kept(current, n, threshold, n_steps);
    }
  }
  return sizes;
}

int64_t kcd_sample_passes(int64_t n, int64_t epochs, int64_t period, double threshold,
                          int64_t n_steps, int64_t warmup) {
  const auto sizes = kcd_kept_sizes(n, epochs, period, threshold, n_steps, warmup);
  return std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
}

// kcd_mix_weights reproduces float32 arithmetic one rounding per operation: no contraction into
// fused multiply-adds, whatever -ffp-contract the build defaults to (GCC's C++ default fuses).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

std::vector<float> kcd_mix_weights(int64_t length, double eps_max) {
  // The code (MIXUPNet.forward) in float32 tensors: (1 - 0.7) * ((L * ones - idx) / L) + 0.7.
  std::vector<float> w(static_cast<size_t>(std::max<int64_t>(length, 0)));
  const float len = static_cast<float>(length);
  const float eps = static_cast<float>(eps_max);
  const float base = static_cast<float>(1.0 - eps_max);
  for (int64_t j = 0; j < length; ++j) {
    const float remaining = len - static_cast<float>(j);  // exact below 2^24
    w[j] = eps * (remaining / len) + base;
  }
  return w;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

std::vector<double> kcd_scores(const std::vector<double>& sum, const std::vector<int64_t>& count,
                               double f_ref, double alpha) {
  if (sum.size() != count.size()) throw std::invalid_argument("kcd_scores: size mismatch");
  if (!(f_ref > 0.0)) throw std::invalid_argument("kcd_scores: f_ref must be > 0");
  std::vector<double> score(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) {
    const double f = static_cast<double>(count[i]);
    const double mean = sum[i] / std::max(f, 1.0);  // guard rail: F = 0 scores 0, not NaN
    score[i] = std::pow(f / f_ref, alpha) * mean;
  }
  return score;
}

std::vector<int64_t> kcd_rank(const std::vector<double>& scores,
                              const std::vector<int64_t>& candidates) {
  std::vector<int64_t> order = candidates;
  const auto key = [&](int64_t i) {
    const double s = scores.at(static_cast<size_t>(i));
    return std::isnan(s) ? -std::numeric_limits<double>::infinity() : s;
  };
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const double ka = key(a), kb = key(b);
    return ka != kb ? ka > kb : a < b;
  });
  return order;
}

KcdCondensation kcd_condense(const std::vector<double>& scores, const std::vector<int64_t>& keep,
                             double threshold, int64_t n_steps, bool nested) {
  const int64_t n = static_cast<int64_t>(scores.size());
  std::vector<int64_t> candidates = keep;
  if (!nested) {
    candidates.resize(static_cast<size_t>(n));
    std::iota(candidates.begin(), candidates.end(), int64_t{0});
  }
  const std::vector<int64_t> order = kcd_rank(scores, candidates);
  const int64_t previous = static_cast<int64_t>(keep.size());
  const int64_t next = kcd_next_kept(previous, n, threshold, n_steps);
  KcdCondensation c;
  c.keep.assign(order.begin(), order.begin() + next);
  c.lost.assign(order.begin() + next, order.begin() + previous);
  // The tail: as many of the lowest-ranked kept samples as there are lost ones (all of the kept
  // set if it is the smaller, which the code's slicing also gives; lost samples past it then go
  // unpaired).
  const int64_t tail = std::min<int64_t>(static_cast<int64_t>(c.lost.size()), next);
  c.tail.assign(c.keep.end() - tail, c.keep.end());
  return c;
}

KcdPlugin::KcdPlugin(KcdOptions options) : requested_(std::move(options)) {
  kcd_resolve(requested_, std::max<int64_t>(requested_.period, 1));  // validate early
}

void KcdPlugin::start(Trainer& trainer) {
  resolved_ = kcd_resolve(requested_, trainer.options().epochs);
  const data::ImageSet& set = trainer.train_set();
  n_ = set.size();
  value_sum_.assign(static_cast<size_t>(n_), 0.0);
  seen_count_.assign(static_cast<size_t>(n_), 0);
  column_.assign(static_cast<size_t>(n_), -1.0f);
  keep_ = set.all_indices();
  condensations_ = 0;
  mix_dst_.clear();
  mix_src_.clear();
  mix_w_dst_.clear();
  mix_w_src_.clear();
  pixel_hash_ = hash_bytes(set.pixels());
  trainer.train_loader().set_indices(keep_);
  started_ = true;
}

void KcdPlugin::restore(Trainer& trainer) {
  start(trainer);  // the resolved options, N and empty statistics, checked against the state
  const nn::NamedTensors state = std::move(loaded_);
  loaded_.clear();
  pending_restore_ = false;

  const auto config = state_vector<double>(state, "config", static_cast<int64_t>(kConfigSize));
  const auto now = config_values(resolved_, n_);
  for (size_t i = 0; i < kConfigSize; ++i) {
    if (config[i] != now[i]) {
      throw std::runtime_error("KCD resume: the checkpoint was written with " +
                               std::string(kConfigNames[i]) + " " + std::to_string(config[i]) +
                               ", this run has " + std::to_string(now[i]) +
                               " (resume needs the same value)");
    }
  }
  value_sum_ = state_vector<double>(state, "value_sum", n_);
  seen_count_ = state_vector<int64_t>(state, "seen_count", n_);
  column_ = state_vector<float>(state, "column", n_);
  keep_ = state_vector<int64_t>(state, "kept", -1);
  condensations_ = state_vector<int64_t>(state, "condensations", 1)[0];
  const int64_t stored_hash = state_vector<int64_t>(state, "pixel_hash", 1)[0];
  for (int64_t i : keep_) {
    if (i < 0 || i >= n_) throw std::runtime_error("KCD resume: kept index out of range");
  }

  if (state_has(state, "mix_dst")) {
    mix_dst_ = state_vector<int64_t>(state, "mix_dst", -1);
    const int64_t m = static_cast<int64_t>(mix_dst_.size());
    mix_src_ = state_vector<int64_t>(state, "mix_src", m);
    const auto weights = state_vector<float>(state, "mix_weights", 2 * m);  // (M, 2)
    mix_w_dst_.resize(static_cast<size_t>(m));
    mix_w_src_.resize(static_cast<size_t>(m));
    for (int64_t k = 0; k < m; ++k) {
      mix_w_dst_[k] = weights[2 * k];
      mix_w_src_[k] = weights[2 * k + 1];
      if (mix_dst_[k] < 0 || mix_dst_[k] >= n_ || mix_src_[k] < 0 || mix_src_[k] >= n_) {
        throw std::runtime_error("KCD resume: mix operation index out of range");
      }
    }
    // Replayed one at a time, in the order applied: a later operation may read an image an
    // earlier one wrote.
    data::ImageSet& set = trainer.train_set();
    uint8_t* pixels = set.mutable_pixels().data();
    for (int64_t k = 0; k < m; ++k) {
      kernels::mix_images(kernels::CpuContext{}, 1, set.image_numel(), &mix_dst_[k], &mix_src_[k],
                          &mix_w_dst_[k], &mix_w_src_[k], pixels);
    }
    pixel_hash_ = hash_bytes(set.pixels());
  }
  if (static_cast<int64_t>(pixel_hash_) != stored_hash) {
    throw std::runtime_error(
        "KCD resume: the training pixels after replaying " + std::to_string(mix_count()) +
        " mix operations differ from the checkpoint's; a resumed run must be given the original, "
        "unmixed training set");
  }
  trainer.train_loader().set_indices(keep_);
}

void KcdPlugin::on_epoch_begin(Trainer& trainer, int64_t /*epoch*/) {
  if (pending_restore_) {
    restore(trainer);
  } else if (!started_) {
    start(trainer);
  }
}

void KcdPlugin::on_step(Trainer& /*trainer*/, const data::Batch& batch, const Tensor& logits) {
  if (!started_) throw std::logic_error("KcdPlugin::on_step before on_epoch_begin");
  Tensor entropy = softmax_entropy(logits, 1.0);  // (B)
  if (entropy.numel() != batch.indices.numel()) {
    throw std::invalid_argument("KCD: " + std::to_string(entropy.numel()) + " logit rows for " +
                                std::to_string(batch.indices.numel()) + " batch indices");
  }
  pending_steps_.emplace_back(std::move(entropy), batch.indices);
}

void KcdPlugin::flush_steps() const {
  for (const auto& [entropy_t, indices_t] : pending_steps_) {
    const std::vector<float> entropy = entropy_t.to_vector<float>();  // (B)
    const std::vector<int64_t> indices = indices_t.to_vector<int64_t>();  // (B)
    for (size_t b = 0; b < indices.size(); ++b) {
      const int64_t i = indices[b];
      if (i < 0 || i >= n_) {
        pending_steps_.clear();
        throw std::out_of_range("KCD: sample index " + std::to_string(i) + " outside the " +
                                std::to_string(n_) + "-image training set");
      }
      column_[i] = entropy[b];  // seen twice in one epoch: the last value wins, as in the code
    }
  }
  pending_steps_.clear();
}

void KcdPlugin::on_epoch_end(Trainer& trainer, int64_t epoch) {
  if (!started_) throw std::logic_error("KcdPlugin::on_epoch_end before on_epoch_begin");
  flush_steps();
  for (int64_t i = 0; i < n_; ++i) {
    const float v = column_[i];
    value_sum_[i] += std::max(v, 0.0f);  // clip(R, 0, max R): -1 "not seen" adds nothing
    seen_count_[i] += v > 0.0f ? 1 : 0;  // (R > 0): an exact 0 counts as not seen, as in the code
    column_[i] = -1.0f;
  }
  if (kcd_condenses_after(epoch, trainer.options().epochs, resolved_.period, resolved_.warmup)) {
    condense(trainer);
  }
}

void KcdPlugin::condense(Trainer& trainer) {
  const auto scores = kcd_scores(value_sum_, seen_count_, resolved_.f_ref, resolved_.alpha_f);
  KcdCondensation c =
      kcd_condense(scores, keep_, resolved_.threshold, resolved_.n_steps, resolved_.nested);
  // Guard rail: nothing dropped (floor reached) means nothing to mix; the code's remain[-0:]
  // would take the whole kept set as the tail.
  if (resolved_.mixing && !c.tail.empty()) {
    if (trainer.train_loader().epoch_in_flight()) {
      throw std::logic_error("KCD: cannot mix pixels while a training epoch is in flight");
    }
    const int64_t length = static_cast<int64_t>(c.tail.size());
    const std::vector<float> keep_weight = kcd_mix_weights(length, resolved_.eps_max);
    std::vector<float> w_dst(static_cast<size_t>(length)), w_src(static_cast<size_t>(length));
    for (int64_t j = 0; j < length; ++j) {
      w_dst[j] = resolved_.additive ? 1.0f : keep_weight[j];
      w_src[j] = 1.0f - keep_weight[j];  // float32, as the code's ones - remain_rate
    }
    const std::vector<int64_t> src(c.lost.begin(), c.lost.begin() + length);
    data::ImageSet& set = trainer.train_set();
    kernels::mix_images(kernels::CpuContext{}, length, set.image_numel(), c.tail.data(), src.data(),
                        w_dst.data(), w_src.data(), set.mutable_pixels().data());
    mix_dst_.insert(mix_dst_.end(), c.tail.begin(), c.tail.end());
    mix_src_.insert(mix_src_.end(), src.begin(), src.end());
    mix_w_dst_.insert(mix_w_dst_.end(), w_dst.begin(), w_dst.end());
    mix_w_src_.insert(mix_w_src_.end(), w_src.begin(), w_src.end());
    pixel_hash_ = hash_bytes(set.pixels());
  }
  keep_ = std::move(c.keep);
  trainer.train_loader().set_indices(keep_);
  ++condensations_;
}

std::vector<std::pair<std::string, double>> KcdPlugin::log_fields() const {
  return {{"kept", static_cast<double>(keep_.size())}, {"mixed", static_cast<double>(mix_count())}};
}

nn::NamedTensors KcdPlugin::state() const {
  flush_steps();
  if (!started_) return {};
  nn::NamedTensors s;
  s.emplace_back("config", Tensor::from_vector(config_values(resolved_, n_),
                                               {static_cast<int64_t>(kConfigSize)}));
  s.emplace_back("value_sum", Tensor::from_vector(value_sum_, {n_}));
  s.emplace_back("seen_count", Tensor::from_vector(seen_count_, {n_}));
  s.emplace_back("column", Tensor::from_vector(column_, {n_}));
  s.emplace_back("kept", Tensor::from_vector(keep_, {static_cast<int64_t>(keep_.size())}));
  s.emplace_back("condensations", Tensor::from_vector(std::vector<int64_t>{condensations_}, {1}));
  s.emplace_back("pixel_hash",
                 Tensor::from_vector(std::vector<int64_t>{static_cast<int64_t>(pixel_hash_)}, {1}));
  const int64_t m = mix_count();
  if (m > 0) {
    std::vector<float> weights(static_cast<size_t>(2 * m));  // (M, 2): w_dst, w_src
    for (int64_t k = 0; k < m; ++k) {
      weights[2 * k] = mix_w_dst_[k];
      weights[2 * k + 1] = mix_w_src_[k];
    }
    s.emplace_back("mix_dst", Tensor::from_vector(mix_dst_, {m}));
    s.emplace_back("mix_src", Tensor::from_vector(mix_src_, {m}));
    s.emplace_back("mix_weights", Tensor::from_vector(weights, {m, 2}));
  }
  return s;
}

void KcdPlugin::load_state(const nn::NamedTensors& state) {
  if (state.empty()) {
    throw std::runtime_error(
        "KCD resume: the checkpoint holds no kcd state (it was written by a run without KCD)");
  }
  loaded_ = state;
  pending_restore_ = true;
}

}  // namespace retort::distill
