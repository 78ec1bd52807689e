// DataLoader: seeded per-epoch order, batching, augmentation, background prefetch over an ImageSet.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "datasets/image_set.h"
#include "engine/tensor.h"

namespace retort::data {

// One batch, on the loader's device. B is the batch size except for a partial last batch.
struct Batch {
  Tensor images;   // (B, C, H, W) f32, augmented and normalised
  Tensor labels;   // (B) i64
  Tensor indices;  // (B) i64: each sample's index in the ImageSet (its "original index")
};

// Per-image transform, in torchvision's order: random crop with zero padding, random horizontal
// flip (p = 0.5), scale to [0, 1], normalise per channel. The random parts run only when `random`
// is true, so a training and an evaluation loader can share one value with random flipped.
struct AugmentOptions {
  int crop_padding = 0;  // RandomCrop(size = (H, W), padding = crop_padding); 0: no crop
  bool horizontal_flip = false;
  std::vector<float> mean;  // (C) or empty for 0
  std::vector<float> std;   // (C) or empty for 1
  bool random = true;       // false: crop and flip off, normalisation kept (evaluation)
};

struct DataLoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;  // false: keep the partial last batch (PyTorch's default)
  uint64_t seed = 0;       // drives the shuffle and the augmentation
  AugmentOptions augment;
  // Batches the background thread may prepare ahead (bounded queue); 0 runs everything on the
  // caller's thread inside next().
  int prefetch_batches = 3;
  // CPU threads the augmentation kernel may use for one batch (0: all cores). One is plenty for
  // small images and leaves the cores to the training step.
  int kernel_threads = 1;
  // Runs on the preparing thread after each batch is made (an extra transform, a copy to a
  // device); an exception it throws is re-thrown by next().
  std::function<void(Batch&)> batch_hook;
  // Where batches are made. On a CUDA device the loader keeps a device copy of the set's uint8
  // pixels (uploaded again when ImageSet::pixels_version() changes, checked at begin_epoch) and
  // augments there: per batch only the indices and labels cross the bus, and the images are the
  // same bits as the CPU path makes. Device batches are made on the caller's thread inside
  // next() (launching the kernel takes microseconds), so prefetch_batches is not used there.
  Device device = Device::cpu();
};

// Iterates an ImageSet in batches over a list of indices into it (the current training set,
// which KCD may change between epochs with set_indices):
//
//   DataLoader loader(train_set, train_set->all_indices(), options);
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.begin_epoch(epoch);
//     while (auto batch = loader.next()) step(batch->images, batch->labels, batch->indices);
//   }
//
// Determinism: epoch e's order is seeded_permutation(n, seed, kShuffleStreamBase + e) applied to
// the index list, and the sample at position k of epoch e is augmented with Philox counter
// (e << 32) + k (key seed, kernels/augment.h). Both depend on (seed, epoch, index list) only, so
// resuming at epoch e reproduces that epoch exactly without replaying the earlier ones, and the
// result does not depend on prefetching or thread counts.
//
// Threading: one background thread per epoch fills a bounded queue; an exception there is
// re-thrown by next(). begin_epoch() and the destructor stop an epoch in flight (no hang). The
// ImageSet's pixels may be changed (KCD's mixing) only while no epoch is in flight: after next()
// returned nullopt or threw, or after end_epoch(). A DataLoader is used from one thread.
class DataLoader {
 public:
  // Throws std::invalid_argument on a bad option (naming it) or an index outside the set.
  DataLoader(std::shared_ptr<const ImageSet> set, std::vector<int64_t> indices,
             DataLoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Replaces the index list (each checked against the set); takes effect at the next
  // begin_epoch, an epoch in flight keeps the order it started with.
  void set_indices(std::vector<int64_t> indices);
  const std::vector<int64_t>& indices() const { return indices_; }
  const ImageSet& set() const { return *set_; }
  const DataLoaderOptions& options() const { return options_; }

  // Samples and batches one epoch yields over the current index list.
  int64_t samples_per_epoch() const;
  int64_t batches_per_epoch() const;
  // The index list in epoch e's order (before drop_last), as begin_epoch(e) will serve it.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  // Starts epoch `epoch` (>= 0), ending any epoch in flight first.
  void begin_epoch(int64_t epoch);
  // The next batch of the epoch, or nullopt once it is exhausted (and on every later call until
  // the next begin_epoch). Re-throws an exception raised while preparing the batch.
  std::optional<Batch> next();
  // Stops the epoch in flight, discarding batches not yet taken. Safe to call at any time.
  void end_epoch();
  bool epoch_in_flight() const { return running_; }

 private:
  struct Slot {  // one queue entry: a batch, the end marker or an error
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  Batch make_batch(int64_t batch_index) const;
  bool on_device() const { return !options_.device.is_cpu(); }
  void worker_loop();
  void stop_worker();

  std::shared_ptr<const ImageSet> set_;
  std::vector<int64_t> indices_;
  DataLoaderOptions options_;

  // State of the epoch in flight; the worker reads order_ and epoch_, which change only while
  // no worker runs.
  bool started_ = false;
  bool running_ = false;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;  // this epoch's indices in serving order
  // Device loaders: the set's pixels on the device and the pixels_version() they were copied at.
  Tensor device_pixels_;
  uint64_t device_pixels_version_ = 0;
  int64_t batch_count_ = 0;
  int64_t next_batch_ = 0;  // synchronous mode: the next batch to make

  // Worker thread and its bounded queue.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable queue_changed_;
  std::deque<Slot> queue_;
  bool stop_ = false;
};

}  // namespace retort::data
