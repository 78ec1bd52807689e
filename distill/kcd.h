// KCD (Knowledge Condensation Distillation): online per-sample value and training-set condensation.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "distill/trainer.h"

namespace retort::distill {

// KCD's knobs (spec 2.2, 2.3). Defaults are the official code's behaviour (`--version v3
// --purification 40 --threshold 0.7`), with the period scaled to the run; the paper's variants
// are options.
struct KcdOptions {
  // Epochs between condensations (the code's --purification). 0: the code's 40 scaled to the
  // run, round(epochs / 6) and at least 1 (240 epochs -> 40, 30 epochs -> 5).
  int64_t period = 0;
  // The final minimum kept fraction (the code's --threshold): each condensation drops
  // int(N (1 - threshold) / n_steps) samples until int(threshold N) remain.
  double threshold = 0.7;
  int64_t n_steps = 6;
  // Score = mean entropy * (F / f_ref)^alpha_f, F = epochs a sample was seen in (spec 2.2 (d)).
  double alpha_f = 0.03;
  // 0: the period. The code hard-codes 40 (its period in the README setting); f_ref only rescales
  // every score by the same factor, so it never changes the order.
  double f_ref = 0.0;
  // The mixing ramp: the j-th of L tail samples keeps weight (1 - eps_max) + eps_max (L - j) / L.
  double eps_max = 0.3;
  // v3 (true): mix the tail with the dropped samples; v2 (false): drop only.
  bool mixing = true;
  // Paper variant: x_tail + eps x_lost (clamped to 255) instead of the code's convex mix.
  bool additive = false;
  // Paper variant: rank only the current kept set, so a dropped sample never comes back. Default
  // (the code): re-rank all N samples at every condensation.
  bool nested = false;
  // No condensation before this epoch (the code's --warmup; condition epoch >= warmup).
  int64_t warmup = 0;
};

// round(epochs / 6), at least 1: the code's 40 of 240 epochs.
int64_t kcd_default_period(int64_t epochs);
// `options` with period and f_ref filled in for a run of `epochs`; throws std::invalid_argument
// naming the option when a value is out of range.
KcdOptions kcd_resolve(const KcdOptions& options, int64_t epochs);

// --- the schedule and the arithmetic, as pure functions (spec 2.2 (c)-(f)) ---------------------

// Whether the set is condensed at the end of (1-based) `epoch`: epoch % period == 0, epoch >=
// warmup, and epoch < epochs. The code also condenses after the last epoch, which changes nothing
// that trains (spec 2.4 item 7); we skip it.
bool kcd_condenses_after(int64_t epoch, int64_t epochs, int64_t period, int64_t warmup = 0);
// Samples dropped per condensation, int(N (1 - threshold) / n_steps), in double as the code does.
int64_t kcd_step_size(int64_t n, double threshold, int64_t n_steps);
// The kept-set floor, int(threshold N).
int64_t kcd_floor_size(int64_t n, double threshold);
// The kept count after a condensation of a set of `current`: max(current - step, floor), never
// more than `current`.
int64_t kcd_next_kept(int64_t current, int64_t n, double threshold, int64_t n_steps);
// The training-set size of every epoch 1..epochs (element e - 1 is epoch e's).
std::vector<int64_t> kcd_kept_sizes(int64_t n, int64_t epochs, int64_t period, double threshold,
                                    int64_t n_steps, int64_t warmup = 0);
// Student sample passes over the whole run: the sum of kcd_kept_sizes.
int64_t kcd_sample_passes(int64_t n, int64_t epochs, int64_t period, double threshold,
                          int64_t n_steps, int64_t warmup = 0);
// The weight the j-th tail sample keeps, for j < L, in float32 exactly as the code computes it:
// eps_max * ((L - j) / L) + (1 - eps_max), each operation rounded to float. 1 at j = 0, 0.70012 at
// j = L - 1 for L = 2500 and eps_max 0.3. The lost sample's weight is 1 - w (also float32).
std::vector<float> kcd_mix_weights(int64_t length, double eps_max);
// score[i] = (sum[i] / max(count[i], 1)) * (count[i] / f_ref)^alpha, in double. count 0 scores 0.
std::vector<double> kcd_scores(const std::vector<double>& sum, const std::vector<int64_t>& count,
                               double f_ref, double alpha);
// `candidates` sorted by score, descending; ties by ascending index (a stable order; the code's
// numpy quicksort leaves ties in no defined order).
std::vector<int64_t> kcd_rank(const std::vector<double>& scores,
                              const std::vector<int64_t>& candidates);

// One condensation's outcome. keep and lost are in descending score; tail is the last
// lost.size() entries of keep, so tail[j] is mixed with lost[j].
struct KcdCondensation {
  std::vector<int64_t> keep;
  std::vector<int64_t> lost;
  std::vector<int64_t> tail;
};
// Ranks all N samples (or, when nested, only the current `keep`), keeps the first
// kcd_next_kept(keep.size(), ...) and names as lost the ranks between the new and the old size
// (spec 2.3). With re-ranking a lost sample need not have been in `keep`, and a sample outside
// `keep` may come back.
KcdCondensation kcd_condense(const std::vector<double>& scores, const std::vector<int64_t>& keep,
                             double threshold, int64_t n_steps, bool nested);

// --- the plugin -------------------------------------------------------------------------------

// KCD on top of any objective. E-step: each training step's student logits (train mode,
// augmented view; no extra forward) give the entropy at T = 1 of every sample in the batch,
// recorded per original index into this epoch's column (-1 = not seen; a sample seen twice in an
// epoch keeps its last value, as the code's overwrite does). At the end of the epoch the column is
// folded into a per-sample sum S += max(v, 0) and count F += (v > 0): exactly the code's
// clip(R, 0, max R).sum(1) and (R > 0).sum(1) over the never-reset history matrix R, kept in
// O(N) (S in double; the code sums float32 entropies, so exact near-ties may rank differently).
// M-step, at the end of every epoch kcd_condenses_after says: score, rank, shrink (and mix the tail
// with the lost samples' raw pixels, in the training ImageSet, persistently), then hand the new
// index list to the training loader.
//
// Checkpoint state (exact resume): S, F, the current column, the kept list and the list of mix
// operations performed so far (dst, src, the two float weights), replayed in order onto the
// original pixels at the first epoch after a resume, plus a 64-bit hash of the pixels checked
// after the replay. We store the operations rather than the mixed pixels: 24 bytes per mixed
// image (at most N (1 - threshold) over a default run, 300 KB for CIFAR-100) instead of the whole
// training set (47 MB for Fashion-MNIST, 154 MB for CIFAR-100), and the replay is deterministic
// (kernels::mix_images). A resumed trainer must therefore be given the original, unmixed
// training set; the hash check refuses anything else.
class KcdPlugin final : public TrainerPlugin {
 public:
  explicit KcdPlugin(KcdOptions options = {});

  std::string name() const override { return "kcd"; }
  void on_epoch_begin(Trainer& trainer, int64_t epoch) override;
  void on_step(Trainer& trainer, const data::Batch& batch, const Tensor& logits) override;
  void on_epoch_end(Trainer& trainer, int64_t epoch) override;
  // "kept": the kept-set size after this epoch's update (what the next epoch trains on);
  // "mixed": mix operations so far.
  std::vector<std::pair<std::string, double>> log_fields() const override;
  nn::NamedTensors state() const override;
  void load_state(const nn::NamedTensors& state) override;

  // --- inspection (tests, reports) ----------------------------------------------------------
  // The options as resolved for the run (valid after the first on_epoch_begin).
  const KcdOptions& options() const { return resolved_; }
  const std::vector<int64_t>& kept() const { return keep_; }
  const std::vector<double>& value_sums() const { return value_sum_; }     // S, (N)
  const std::vector<int64_t>& seen_counts() const { return seen_count_; }  // F, (N)
  const std::vector<float>& current_column() const {  // (N), -1 unseen
    flush_steps();
    return column_;
  }
  int64_t mix_count() const { return static_cast<int64_t>(mix_dst_.size()); }
  const std::vector<int64_t>& mix_destinations() const { return mix_dst_; }
  int64_t condensations() const { return condensations_; }

 private:
  void start(Trainer& trainer);
  void restore(Trainer& trainer);
  void condense(Trainer& trainer);
  // Copies the entropies of the steps since the last flush into column_ (one wait for the device
  // per epoch instead of one per step).
  void flush_steps() const;

  KcdOptions requested_;
  KcdOptions resolved_;
  bool started_ = false;
  bool pending_restore_ = false;
  int64_t n_ = 0;                    // training-set size N
  std::vector<double> value_sum_;    // (N) S: sum of clipped entropies
  std::vector<int64_t> seen_count_;  // (N) F: epochs with a value > 0
  mutable std::vector<float> column_;  // (N) this epoch's entropies, -1 = not seen
  // Each step's per-sample entropies and sample indices, (B) each, on the model's device, until
  // flush_steps() writes them into column_ in step order.
  mutable std::vector<std::pair<Tensor, Tensor>> pending_steps_;
  std::vector<int64_t> keep_;        // current kept set, original indices in rank order
  int64_t condensations_ = 0;
  // Mix operations so far, in the order applied.
  std::vector<int64_t> mix_dst_, mix_src_;
  std::vector<float> mix_w_dst_, mix_w_src_;
  uint64_t pixel_hash_ = 0;  // hash of the training pixels after the last change
  nn::NamedTensors loaded_;  // a checkpoint's state, applied at the next on_epoch_begin
};

}  // namespace retort::distill
