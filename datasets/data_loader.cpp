// DataLoader: per-epoch seeded order, batch assembly through the augment kernel, prefetch thread.
#include "datasets/data_loader.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "datasets/permutation.h"
#include "engine/augment.h"
#include "kernels/augment.h"

namespace retort::data {
namespace {

void check_indices(const ImageSet& set, const std::vector<int64_t>& indices) {
  for (size_t k = 0; k < indices.size(); ++k) {
    if (indices[k] < 0 || indices[k] >= set.size()) {
      throw std::invalid_argument("DataLoader: index " + std::to_string(indices[k]) +
                                  " at position " + std::to_string(k) + " is outside [0, " +
                                  std::to_string(set.size()) + ") of " + set.source());
    }
  }
}

void check_options(const ImageSet& set, const DataLoaderOptions& o) {
  auto bad = [](const std::string& what) { return std::invalid_argument("DataLoader: " + what); };
  if (o.batch_size < 1)
    throw bad("batch_size must be positive, got " + std::to_string(o.batch_size));
  if (o.prefetch_batches < 0) {
    throw bad("prefetch_batches must be >= 0, got " + std::to_string(o.prefetch_batches));
  }
  if (o.kernel_threads < 0) {
    throw bad("kernel_threads must be >= 0, got " + std::to_string(o.kernel_threads));
  }
  const AugmentOptions& a = o.augment;
  if (a.crop_padding < 0) {
    throw bad("augment.crop_padding must be >= 0, got " + std::to_string(a.crop_padding));
  }
  if (set.channels() > kernels::kMaxAugmentChannels) {
    throw bad(std::to_string(set.channels()) + "-channel images; at most " +
              std::to_string(kernels::kMaxAugmentChannels) + " are supported");
  }
  const auto channels = static_cast<size_t>(set.channels());
  if (!a.mean.empty() && a.mean.size() != channels) {
    throw bad("augment.mean has " + std::to_string(a.mean.size()) + " values for " +
              std::to_string(channels) + "-channel images");
  }
  if (!a.std.empty() && a.std.size() != channels) {
    throw bad("augment.std has " + std::to_string(a.std.size()) + " values for " +
              std::to_string(channels) + "-channel images");
  }
  for (float s : a.std) {
    if (!(s > 0.0f)) throw bad("augment.std values must be positive, got " + std::to_string(s));
  }
}

}  // namespace

DataLoader::DataLoader(std::shared_ptr<const ImageSet> set, std::vector<int64_t> indices,
                       DataLoaderOptions options)
    : set_(std::move(set)), options_(std::move(options)) {
  if (!set_) throw std::invalid_argument("DataLoader: no image set given");
  check_options(*set_, options_);
  require_available(options_.device);
  set_indices(std::move(indices));
}

DataLoader::~DataLoader() {
  stop_worker();
}

void DataLoader::set_indices(std::vector<int64_t> indices) {
  check_indices(*set_, indices);
  indices_ = std::move(indices);
}

int64_t DataLoader::samples_per_epoch() const {
  const auto n = static_cast<int64_t>(indices_.size());
  return options_.drop_last ? n / options_.batch_size * options_.batch_size : n;
}

int64_t DataLoader::batches_per_epoch() const {
  const auto n = static_cast<int64_t>(indices_.size());
  const int64_t b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  if (epoch < 0) throw std::invalid_argument("DataLoader: negative epoch " + std::to_string(epoch));
  if (!options_.shuffle) return indices_;
  const auto n = static_cast<int64_t>(indices_.size());
  const std::vector<int64_t> permutation =
      seeded_permutation(n, options_.seed, kShuffleStreamBase + static_cast<uint64_t>(epoch));
  std::vector<int64_t> order(n);
  for (int64_t k = 0; k < n; ++k) order[k] = indices_[permutation[k]];
  return order;
}

void DataLoader::begin_epoch(int64_t epoch) {
  stop_worker();
  order_ = epoch_order(epoch);
  epoch_ = epoch;
  batch_count_ = batches_per_epoch();
  next_batch_ = 0;
  if (on_device() && (!device_pixels_.defined() ||
                      device_pixels_version_ != set_->pixels_version())) {
    const ImageSet& set = *set_;
    device_pixels_ = Tensor::empty({set.size(), set.channels(), set.height(), set.width()},
                                   DType::u8, options_.device);
    copy_bytes(device_pixels_.raw_data(), options_.device, set.pixels().data(), Device::cpu(),
               set.pixels().size());
    device_pixels_version_ = set.pixels_version();
  }
  started_ = true;
  running_ = true;
  if (options_.prefetch_batches > 0 && !on_device()) {
    worker_ = std::thread(&DataLoader::worker_loop, this);
  }
}

Batch DataLoader::make_batch(int64_t batch_index) const {
  const ImageSet& set = *set_;
  const int64_t start = batch_index * options_.batch_size;
  const int64_t count =
      std::min<int64_t>(options_.batch_size, static_cast<int64_t>(order_.size()) - start);
  Batch batch;
  batch.labels = Tensor::empty({count}, DType::i64);
  batch.indices = Tensor::empty({count}, DType::i64);
  int64_t* indices = batch.indices.data<int64_t>();  // (B)
  int64_t* labels = batch.labels.data<int64_t>();    // (B)
  for (int64_t b = 0; b < count; ++b) {
    indices[b] = order_[start + b];
    labels[b] = set.labels()[indices[b]];
  }

  const AugmentOptions& a = options_.augment;
  kernels::AugmentParams params;
  params.pad = a.random ? a.crop_padding : 0;
  params.flip_prob = a.random && a.horizontal_flip ? 0.5f : 0.0f;
  for (size_t c = 0; c < a.mean.size(); ++c) params.mean[c] = a.mean[c];
  for (size_t c = 0; c < a.std.size(); ++c) params.std[c] = a.std[c];
  // Position start + b of epoch e draws counter (e << 32) + start + b: see the class comment.
  const uint64_t offset = (static_cast<uint64_t>(epoch_) << 32) + static_cast<uint64_t>(start);
  if (on_device()) {
    // Indices were checked against the set when the index list was set; the uploads queue
    // behind the device's work without waiting for it.
    batch.indices = batch.indices.to(options_.device);
    batch.labels = batch.labels.to(options_.device);
    batch.images = augment_images(device_pixels_, batch.indices, params, options_.seed, offset);
  } else {
    batch.images = Tensor::empty({count, set.channels(), set.height(), set.width()}, DType::f32);
    const kernels::AugmentShape shape{count, set.size(), set.channels(), set.height(),
                                      set.width()};
    kernels::augment_gather<float>(kernels::CpuContext{options_.kernel_threads}, shape, params,
                                   options_.seed, offset, set.pixels().data(), indices,
                                   batch.images.data<float>());
  }
  if (options_.batch_hook) options_.batch_hook(batch);
  return batch;
}

void DataLoader::worker_loop() {
  for (int64_t b = 0; b < batch_count_; ++b) {
    Slot slot;
    try {
      slot.batch = make_batch(b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    std::unique_lock lock(mutex_);
    queue_changed_.wait(lock, [&] {
      return stop_ || static_cast<int64_t>(queue_.size()) < options_.prefetch_batches;
    });
    if (stop_) return;
    const bool failed = slot.error != nullptr;
    queue_.push_back(std::move(slot));
    lock.unlock();
    queue_changed_.notify_all();
    if (failed) return;
  }
  {
    std::lock_guard lock(mutex_);
    if (stop_) return;
    queue_.push_back(Slot{});  // end marker
  }
  queue_changed_.notify_all();
}

std::optional<Batch> DataLoader::next() {
  if (!started_) throw std::logic_error("DataLoader::next: call begin_epoch first");
  if (!running_) return std::nullopt;
  if (options_.prefetch_batches == 0 || on_device()) {
    if (next_batch_ >= batch_count_) {
      running_ = false;
      return std::nullopt;
    }
    try {
      return make_batch(next_batch_++);
    } catch (...) {
      running_ = false;
      throw;
    }
  }
  Slot slot;
  {
    std::unique_lock lock(mutex_);
    queue_changed_.wait(lock, [&] { return !queue_.empty(); });
    slot = std::move(queue_.front());
    queue_.pop_front();
  }
  queue_changed_.notify_all();
  if (slot.batch) return std::move(slot.batch);
  // The end marker or an error: the worker has returned (or is about to).
  stop_worker();
  running_ = false;
  if (slot.error) std::rethrow_exception(slot.error);
  return std::nullopt;
}

void DataLoader::end_epoch() {
  stop_worker();
  running_ = false;
}

void DataLoader::stop_worker() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  queue_changed_.notify_all();
  if (worker_.joinable()) worker_.join();
  queue_.clear();
  stop_ = false;
}

}  // namespace retort::data
