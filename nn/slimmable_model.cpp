// SlimmableModel: name mapping between slimmable and plain state, teacher loading, joint backward.
#include "nn/slimmable_model.h"

#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/shape.h"

namespace retort::nn {
namespace {

std::string join_name(const std::string& prefix, const std::string& leaf) {
  return prefix.empty() ? leaf : prefix + "." + leaf;
}

// "layer1.0.conv1.weight" -> ("layer1.0.conv1", "weight").
std::pair<std::string, std::string> split_owner(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

// Where each tensor of a slimmable model lives: its owning module, and for the per-width BNs of
// a SwitchableBatchNorm2d, the switchable layer's path and the width index.
struct SwitchableSlot {
  std::string path;  // of the SwitchableBatchNorm2d
  int64_t index = 0;
  const SwitchableBatchNorm2d* layer = nullptr;
};

struct ModuleIndex {
  std::unordered_map<std::string, const Module*> modules;
  std::unordered_map<std::string, SwitchableSlot> switchable_children;  // "bn1.bn.2" -> slot

  explicit ModuleIndex(const Module& root) {
    for (const auto& [path, m] : root.named_modules()) {
      modules.emplace(path, m);
      if (const auto* sbn = dynamic_cast<const SwitchableBatchNorm2d*>(m)) {
        const auto& list = sbn->named_children().front().second;  // the ModuleList "bn"
        for (int64_t i = 0; i < static_cast<int64_t>(list->named_children().size()); ++i) {
          switchable_children.emplace(join_name(path, "bn." + std::to_string(i)),
                                      SwitchableSlot{path, i, sbn});
        }
      }
    }
  }
  const Module* owner(const std::string& path) const {
    const auto it = modules.find(path);
    return it == modules.end() ? nullptr : it->second;
  }
  const SwitchableSlot* slot(const std::string& path) const {
    const auto it = switchable_children.find(path);
    return it == switchable_children.end() ? nullptr : &it->second;
  }
};

Tensor contiguous_copy(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  out.copy_(t);
  return out;
}

}  // namespace

// --- SlimmableModel
// -------------------------------------------------------------------------------

SlimmableModel::SlimmableModel(std::vector<double> widths)
    : widths_(std::make_shared<WidthSwitch>(std::move(widths))) {}

int64_t SlimmableModel::width_index_of(double width) const {
  for (int64_t i = 0; i < num_widths(); ++i) {
    if (widths()[static_cast<size_t>(i)] == width) return i;
  }
  std::ostringstream msg;
  msg << "width " << width << " is not in the width list " << widths_->str();
  throw std::invalid_argument(msg.str());
}

NamedTensors SlimmableModel::slice_for_width(const NamedTensors& entries, int64_t index) const {
  widths_->check_index(index, "slice_for_width");
  const ModuleIndex modules(*this);
  NoGradGuard no_grad;
  NamedTensors out;
  for (const auto& [name, tensor] : entries) {
    const auto [owner_path, leaf] = split_owner(name);
    const Tensor t = tensor.detach();
    if (const SwitchableSlot* slot = modules.slot(owner_path)) {
      if (slot->index == index) out.emplace_back(join_name(slot->path, leaf), t);
      continue;
    }
    const Module* owner = modules.owner(owner_path);
    if (const auto* conv = dynamic_cast<const SlimmableConv2d*>(owner)) {
      const int64_t out_c = conv->out_channels_at(index);
      if (leaf == "weight") {
        out.emplace_back(name,
                         t.narrow(0, 0, out_c)
                             .narrow(1, 0, conv->in_channels_at(index) / conv->groups_at(index)));
      } else {
        out.emplace_back(name, t.narrow(0, 0, out_c));
      }
    } else if (const auto* fc = dynamic_cast<const SlimmableLinear*>(owner)) {
      out.emplace_back(name, leaf == "weight" ? t.narrow(1, 0, fc->in_features_at(index)) : t);
    } else {
      out.emplace_back(name, t);  // a width-independent tensor
    }
  }
  return out;
}

NamedTensors SlimmableModel::width_state_dict(int64_t index) const {
  NamedTensors out = slice_for_width(state_dict(), index);
  for (auto& [name, t] : out) t = contiguous_copy(t);
  return out;
}

void SlimmableModel::copy_width_to(Module& plain, int64_t index) const {
  plain.load_state_dict(slice_for_width(state_dict(), index), /*strict=*/true);
}

int64_t SlimmableModel::num_parameters_at(int64_t index) const {
  int64_t n = 0;
  for (const auto& [name, t] : slice_for_width(named_parameters(), index)) n += t.numel();
  return n;
}

void SlimmableModel::load_full_teacher(const NamedTensors& full_state) {
  const ModuleIndex modules(*this);
  std::unordered_map<std::string, Tensor> teacher;
  for (const auto& [name, t] : full_state) teacher.emplace(name, t.detach());

  NoGradGuard no_grad;
  NamedTensors mapped;
  std::vector<std::string> missing, mis_shaped;
  std::unordered_set<std::string> used;
  const int64_t widest = num_widths() - 1;
  for (const auto& [name, own] : state_dict()) {
    const auto [owner_path, leaf] = split_owner(name);
    const SwitchableSlot* slot = modules.slot(owner_path);
    const std::string source_name = slot ? join_name(slot->path, leaf) : name;
    const auto it = teacher.find(source_name);
    if (it == teacher.end()) {
      if (!used.count(source_name)) missing.push_back(source_name);
      used.insert(source_name);
      continue;
    }
    used.insert(source_name);
    const Tensor& source = it->second;
    if (!slot || slot->index == widest) {
      mapped.emplace_back(name, source);  // shapes are checked by load_state_dict
      continue;
    }
    if (leaf == "num_batches_tracked") {
      mapped.emplace_back(name, Tensor::zeros({}, DType::i64));
      continue;
    }
    const int64_t full_c = slot->layer->num_features_at(widest);
    if (source.dim() != 1 || source.size(0) != full_c) {
      mis_shaped.push_back(source_name + " (" + shape_str(source.shape()) + ", expected [" +
                           std::to_string(full_c) + "])");
      continue;
    }
    mapped.emplace_back(name, source.narrow(0, 0, slot->layer->num_features_at(slot->index)));
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : full_state) {
    if (!used.count(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !mis_shaped.empty()) {
    std::string msg = "load_full_teacher: the state dict does not match this " + type_name();
    if (!missing.empty()) msg += "; missing keys: " + join_list(missing);
    if (!unexpected.empty()) msg += "; unexpected keys: " + join_list(unexpected);
    if (!mis_shaped.empty()) msg += "; wrong BN shapes: " + join_list(mis_shaped);
    throw std::invalid_argument(msg);
  }
  load_state_dict(mapped, /*strict=*/true);
}

void check_residual_structure(const std::vector<int64_t>& in, const std::vector<int64_t>& out,
                              const WidthSwitch& widths, const std::string& block) {
  const bool full_equal = in.back() == out.back();
  for (size_t i = 0; i < in.size(); ++i) {
    if ((in[i] == out[i]) != full_equal) {
      std::ostringstream msg;
      msg << block << ": at width " << widths.widths()[i] << " the channels " << in[i] << " -> "
          << out[i] << " change the residual structure of the full block (" << in.back() << " -> "
          << out.back() << "); choose other widths than " << widths.str();
      throw std::invalid_argument(msg.str());
    }
  }
}

// --- joint training
// -------------------------------------------------------------------------------

JointBackwardResult joint_backward(SlimmableModel& model, const Tensor& x,
                                   const WidthLossFn& loss_fn) {
  const int64_t previous = model.width_index();
  JointBackwardResult result;
  result.losses.assign(static_cast<size_t>(model.num_widths()), 0.0);
  result.logits.resize(static_cast<size_t>(model.num_widths()));
  try {
    Tensor widest_logits;
    for (int64_t i = model.num_widths() - 1; i >= 0; --i) {
      model.set_width(i);
      const Tensor logits = model(x);
      const Tensor loss = loss_fn(logits, i, widest_logits);
      loss.backward();
      result.losses[static_cast<size_t>(i)] = loss.item();
      result.logits[static_cast<size_t>(i)] = logits.detach();
      if (!widest_logits.defined()) widest_logits = logits.detach();
    }
  } catch (...) {
    model.set_width(previous);
    throw;
  }
  model.set_width(previous);
  return result;
}

WidthLossFn label_cross_entropy_loss(const Tensor& labels) {
  return [labels](const Tensor& logits, int64_t, const Tensor&) {
    return cross_entropy(logits, labels);
  };
}

WidthLossFn inplace_distillation_loss(const Tensor& labels) {
  return [labels](const Tensor& logits, int64_t, const Tensor& widest_logits) {
    if (!widest_logits.defined()) return cross_entropy(logits, labels);
    const Tensor target = softmax(widest_logits).detach();
    return neg(mean(sum(target * log_softmax(logits), {1})));
  };
}

}  // namespace retort::nn
