// Batch-norm folding: pair validation, the folded weights and their staleness checks, the guard.
#include "nn/fold.h"

#include <atomic>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "engine/autograd.h"
#include "nn/layers.h"
#include "nn/slimmable.h"

namespace retort::nn {
namespace {

// The storages of folded tensors' sources, so that writers which only see tensors (an optimiser)
// can tell the folds that their sources changed. `epoch` moves on every such write; each fold
// remembers the epoch it was computed at. Shared-owned by every fold, so it outlives them all.
struct WriteWatch {
  std::mutex mutex;
  std::unordered_map<const void*, int64_t> storages;  // storage -> number of folds watching it
  std::atomic<int64_t> watched{0};                    // storages.size(), readable without the lock
  std::atomic<uint64_t> epoch{0};
};

const std::shared_ptr<WriteWatch>& write_watch() {
  static const std::shared_ptr<WriteWatch> watch = std::make_shared<WriteWatch>();
  return watch;
}

std::string shape_of_list(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

}  // namespace

// What a folded tensor was computed from, to notice a replaced storage (Module::to) or a
// converted dtype. The storage is held weakly and compared by owner (its control block, which
// the weak reference keeps alive), so a freed storage never compares equal to a new one even at
// the same address, and the per-forward check takes no reference count.
struct ConvBnFold::Source {
  const TensorImpl* impl = nullptr;
  std::weak_ptr<Storage> storage;
  int64_t offset = 0;
  DType dtype = DType::f32;

  static Source of(const Tensor& t) {
    Source s;
    if (!t.defined()) return s;
    s.impl = t.impl();
    s.storage = t.storage();
    s.offset = t.offset();
    s.dtype = t.dtype();
    return s;
  }
  bool matches(const Tensor& t) const {
    if (!t.defined()) return impl == nullptr;
    const std::shared_ptr<Storage>& now = t.storage();
    return impl == t.impl() && !storage.owner_before(now) && !now.owner_before(storage) &&
           offset == t.offset() && dtype == t.dtype();
  }
};

// --- ConvBnFold ---------------------------------------------------------------------------------

ConvBnFold::ConvBnFold(Conv2d& conv, Module& bn) : conv_(&conv), bn_(&bn), watch_(write_watch()) {
  slimmable_conv_ = dynamic_cast<SlimmableConv2d*>(&conv);
  plain_bn_ = dynamic_cast<BatchNorm2d*>(&bn);
  switchable_bn_ = dynamic_cast<SwitchableBatchNorm2d*>(&bn);
  const std::string what = conv.type_name() + " -> " + bn.type_name();
  if (slimmable_conv_ == nullptr) {
    if (plain_bn_ == nullptr) {
      throw std::invalid_argument("cannot fold " + what + ": a Conv2d folds into a BatchNorm2d");
    }
    if (plain_bn_->num_features() != conv.out_channels()) {
      throw std::invalid_argument(
          "cannot fold " + what + ": the conv has " + std::to_string(conv.out_channels()) +
          " output channels, the BN " + std::to_string(plain_bn_->num_features()) + " features");
    }
    return;
  }
  if (switchable_bn_ == nullptr) {
    throw std::invalid_argument("cannot fold " + what +
                                ": a SlimmableConv2d folds into a SwitchableBatchNorm2d");
  }
  if (slimmable_conv_->width_switch() != switchable_bn_->width_switch()) {
    throw std::invalid_argument("cannot fold " + what +
                                ": the layers use different width switches");
  }
  std::vector<int64_t> conv_out, bn_features;
  for (int64_t i = 0; i < slimmable_conv_->width_switch()->size(); ++i) {
    conv_out.push_back(slimmable_conv_->out_channels_at(i));
    bn_features.push_back(switchable_bn_->num_features_at(i));
  }
  if (conv_out != bn_features) {
    throw std::invalid_argument("cannot fold " + what + ": output channels per width " +
                                shape_of_list(conv_out) + " vs BN features per width " +
                                shape_of_list(bn_features));
  }
}

ConvBnFold::~ConvBnFold() {
  unwatch_sources();
}

BatchNorm2d& ConvBnFold::active_bn() const {
  if (plain_bn_ != nullptr) return *plain_bn_;
  return switchable_bn_->bn_at(switchable_bn_->width_switch()->index());
}

int64_t ConvBnFold::width_index() const {
  return slimmable_conv_ != nullptr ? slimmable_conv_->width_switch()->index() : -1;
}

// Every tensor the folded conv depends on: the full conv weight and bias (a slimmable conv's
// width slices are views of them) and the active BN's four tensors.
std::array<const Tensor*, 6> ConvBnFold::source_tensors() const {
  const BatchNorm2d& bn = active_bn();
  return {&conv_->weight(), &conv_->bias(),     &bn.weight(),
          &bn.bias(),       &bn.running_mean(), &bn.running_var()};
}

bool ConvBnFold::applies() const {
  if (conv_->is_training() || bn_->is_training() || active_bn().is_training()) return false;
  if (!grad_mode_enabled()) return true;
  const BatchNorm2d& bn = active_bn();
  for (const Tensor* t : {&conv_->weight(), &conv_->bias(), &bn.weight(), &bn.bias()}) {
    if (t->defined() && t->requires_grad()) return false;
  }
  return true;
}

bool ConvBnFold::stale() const {
  if (!valid_ || width_index() != width_index_) return true;
  if (conv_->state_version() != conv_version_ || active_bn().state_version() != bn_version_) {
    return true;
  }
  if (static_cast<WriteWatch*>(watch_.get())->epoch.load(std::memory_order_acquire) !=
      write_epoch_) {
    return true;
  }
  const std::array<const Tensor*, 6> now = source_tensors();
  for (size_t i = 0; i < now.size(); ++i) {
    if (!sources_[i].matches(*now[i])) return true;
  }
  return false;
}

void ConvBnFold::recompute() {
  valid_ = false;
  NoGradGuard no_grad;
  const int64_t index = width_index();
  BatchNorm2d& bn = active_bn();
  // Read the epoch before the sources: a write that lands while we compute makes us stale.
  const uint64_t epoch =
      static_cast<WriteWatch*>(watch_.get())->epoch.load(std::memory_order_acquire);

  Tensor weight = conv_->weight().detach();  // (C_out, C_in / groups, k, k)
  Tensor conv_bias = conv_->bias().defined() ? conv_->bias().detach() : Tensor();  // (C_out)
  Conv2dOptions options = conv_->op_options();
  if (slimmable_conv_ != nullptr) {
    weight = slimmable_conv_->weight_at(index).detach();
    conv_bias = conv_bias.defined() ? slimmable_conv_->bias_at(index).detach() : Tensor();
    options.groups = slimmable_conv_->groups_at(index);
  }
  const int64_t channels = weight.size(0);
  if (bn.num_features() != channels) {
    throw std::logic_error("ConvBnFold: " + std::to_string(channels) + " conv channels vs " +
                           std::to_string(bn.num_features()) + " BN features");
  }
  // s = gamma / sqrt(var + eps), as gamma * exp(-log(var + eps) / 2): the engine has no sqrt op.
  const Tensor scale =
      bn.weight().detach() * exp(log(bn.running_var().detach() + bn.eps()) * -0.5);  // (C)
  const Tensor mean = bn.running_mean().detach();                                    // (C)
  const Tensor shift = conv_bias.defined() ? conv_bias - mean : -mean;               // (C)
  folded_.weight = weight * scale.reshape({channels, 1, 1, 1});
  folded_.bias = shift * scale + bn.bias().detach();
  folded_.options = options;

  width_index_ = index;
  conv_version_ = conv_->state_version();
  bn_version_ = bn.state_version();
  write_epoch_ = epoch;
  sources_.clear();
  for (const Tensor* t : source_tensors()) sources_.push_back(Source::of(*t));
  watch_sources();
  valid_ = true;
}

const FoldedConv& ConvBnFold::refresh() {
  if (stale()) recompute();
  return folded_;
}

void ConvBnFold::watch_sources() {
  unwatch_sources();
  WriteWatch& w = *static_cast<WriteWatch*>(watch_.get());
  std::lock_guard<std::mutex> lock(w.mutex);
  for (const Tensor* t : source_tensors()) {
    if (!t->defined()) continue;
    const void* storage = t->storage().get();
    watched_.push_back(storage);
    if (w.storages[storage]++ == 0) w.watched.fetch_add(1, std::memory_order_release);
  }
}

void ConvBnFold::unwatch_sources() {
  if (watched_.empty()) return;
  WriteWatch& w = *static_cast<WriteWatch*>(watch_.get());
  std::lock_guard<std::mutex> lock(w.mutex);
  for (const void* storage : watched_) {
    auto it = w.storages.find(storage);
    if (it == w.storages.end()) continue;
    if (--it->second == 0) {
      w.storages.erase(it);
      w.watched.fetch_sub(1, std::memory_order_release);
    }
  }
  watched_.clear();
}

const FoldedConv* ConvBnFold::conv_forward() {
  conv_ran_folded_ = false;
  if (!applies()) return nullptr;
  if (stale()) recompute();
  conv_ran_folded_ = true;
  return &folded_;
}

const FoldedConv* ConvBnFold::unit_forward() {
  conv_ran_folded_ = false;
  if (conv_->has_forward_hooks() || bn_->has_forward_hooks() || active_bn().has_forward_hooks()) {
    return nullptr;
  }
  if (!applies()) return nullptr;
  if (stale()) recompute();
  return &folded_;
}

bool ConvBnFold::bn_forward_is_identity() {
  // The decision is the conv's, taken a moment ago on the same input: never a mix of a plain conv
  // and a skipped BN, even if a hook changed a mode in between.
  const bool identity = conv_ran_folded_;
  conv_ran_folded_ = false;
  return identity;
}

std::pair<std::shared_ptr<ConvBnFold>, std::shared_ptr<ConvBnFold>> ConvBnFold::links() const {
  return {conv_->fold_, plain_bn_ != nullptr ? plain_bn_->fold_ : switchable_bn_->fold_};
}

void ConvBnFold::link(ConvBnFold* fold, const std::shared_ptr<ConvBnFold>& ptr) {
  fold->conv_->fold_ = ptr;
  if (fold->plain_bn_ != nullptr) fold->plain_bn_->fold_ = ptr;
  if (fold->switchable_bn_ != nullptr) fold->switchable_bn_->fold_ = ptr;
  fold->conv_ran_folded_ = false;
}

// --- BatchNormFold ------------------------------------------------------------------------------

namespace {

struct DeclaredPairs {
  std::vector<std::shared_ptr<ConvBnFold>> folds;  // validated, not linked
  std::vector<ConvBnPairName> names;
};

DeclaredPairs declared_pairs(Module& model) {
  std::vector<ConvBnPair> pairs;
  model.collect_conv_bn_pairs(pairs);
  std::unordered_map<const Module*, std::string> paths;
  for (const auto& [path, m] : model.named_modules()) paths.emplace(m, path);
  auto path_of = [&](const Module* m, const char* role) {
    const auto it = paths.find(m);
    if (m == nullptr || it == paths.end()) {
      throw std::invalid_argument(model.type_name() + " declares a conv -> BN pair whose " + role +
                                  " is not one of its modules");
    }
    return it->second.empty() ? std::string("(the model itself)") : it->second;
  };
  DeclaredPairs out;
  std::unordered_set<const Module*> seen;
  for (const ConvBnPair& pair : pairs) {
    ConvBnPairName name{path_of(pair.conv, "conv"), path_of(pair.bn, "BN")};
    for (const Module* m :
         {static_cast<const Module*>(pair.conv), static_cast<const Module*>(pair.bn)}) {
      if (!seen.insert(m).second) {
        throw std::invalid_argument(model.type_name() + " declares '" +
                                    (m == pair.conv ? name.conv : name.bn) +
                                    "' in two conv -> BN pairs");
      }
    }
    try {
      out.folds.push_back(std::make_shared<ConvBnFold>(*pair.conv, *pair.bn));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(model.type_name() + " pair '" + name.conv + "' -> '" + name.bn +
                                  "': " + e.what());
    }
    out.names.push_back(std::move(name));
  }
  return out;
}

}  // namespace

std::vector<ConvBnPairName> conv_bn_pair_names(Module& model) {
  return declared_pairs(model).names;
}

BatchNormFold::BatchNormFold(std::shared_ptr<Module> model) {
  if (!model) throw std::invalid_argument("BatchNormFold: no model given");
  DeclaredPairs declared = declared_pairs(*model);
  // Check every pair against folds held by other guards before linking any, so a refusal folds
  // nothing.
  std::vector<std::shared_ptr<ConvBnFold>> use;
  for (size_t i = 0; i < declared.folds.size(); ++i) {
    const auto [by_conv, by_bn] = declared.folds[i]->links();
    if (by_conv == by_bn) {
      use.push_back(by_conv ? by_conv : declared.folds[i]);  // shared with another guard, or new
    } else {
      throw std::invalid_argument("BatchNormFold: '" + declared.names[i].conv + "' -> '" +
                                  declared.names[i].bn +
                                  "' is already folded with another partner by another guard");
    }
  }
  for (const std::shared_ptr<ConvBnFold>& f : use) {
    if (f->holders_++ == 0) ConvBnFold::link(f.get(), f);
  }
  model_ = std::move(model);
  folds_ = std::move(use);
  names_ = std::move(declared.names);
}

BatchNormFold::BatchNormFold(BatchNormFold&& other) noexcept
    : model_(std::exchange(other.model_, nullptr)),
      folds_(std::exchange(other.folds_, {})),
      names_(std::exchange(other.names_, {})) {}

BatchNormFold& BatchNormFold::operator=(BatchNormFold&& other) noexcept {
  if (this != &other) {
    unfold();
    model_ = std::exchange(other.model_, nullptr);
    folds_ = std::exchange(other.folds_, {});
    names_ = std::exchange(other.names_, {});
  }
  return *this;
}

void BatchNormFold::unfold() noexcept {
  for (const std::shared_ptr<ConvBnFold>& f : folds_) {
    if (--f->holders_ == 0) ConvBnFold::link(f.get(), nullptr);
  }
  folds_.clear();
  names_.clear();
  model_.reset();
}

void BatchNormFold::invalidate() {
  for (const std::shared_ptr<ConvBnFold>& f : folds_) f->invalidate();
}

void BatchNormFold::refresh() {
  for (const std::shared_ptr<ConvBnFold>& f : folds_) f->refresh();
}

void note_tensor_written(const Tensor& t) {
  if (!t.defined()) return;
  WriteWatch& w = *write_watch();
  if (w.watched.load(std::memory_order_acquire) == 0) return;
  std::lock_guard<std::mutex> lock(w.mutex);
  if (w.storages.count(t.storage().get()) != 0) w.epoch.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace retort::nn
