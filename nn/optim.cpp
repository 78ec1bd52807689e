// SGD: option checks, the per-parameter fused step, and state export / import for resume.
#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "nn/fold.h"

namespace retort::nn {
namespace {

void check_options(const SgdOptions& o) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("SGD: " + what); };
  if (!(o.lr >= 0.0) || !std::isfinite(o.lr)) bad("lr must be >= 0, got " + std::to_string(o.lr));
  if (!(o.momentum >= 0.0)) bad("momentum must be >= 0, got " + std::to_string(o.momentum));
  if (!(o.weight_decay >= 0.0)) {
    bad("weight_decay must be >= 0, got " + std::to_string(o.weight_decay));
  }
  if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0)) {
    bad("nesterov needs momentum > 0 and dampening = 0");
  }
}

}  // namespace

NamedTensors SgdState::to_named_tensors(const std::string& prefix) const {
  NamedTensors out;
  out.emplace_back(prefix + "step", Tensor::full({}, static_cast<double>(step_count), DType::i64));
  for (const auto& [name, buf] : momentum_buffers) {
    out.emplace_back(prefix + "momentum_buffer." + name, buf);
  }
  return out;
}

SgdState SgdState::from_named_tensors(const NamedTensors& tensors, const std::string& prefix) {
  SgdState state;
  bool has_step = false;
  const std::string buffer_prefix = prefix + "momentum_buffer.";
  for (const auto& [name, t] : tensors) {
    if (name == prefix + "step") {
      state.step_count = static_cast<int64_t>(t.item());
      has_step = true;
    } else if (name.rfind(buffer_prefix, 0) == 0) {
      state.momentum_buffers.emplace_back(name.substr(buffer_prefix.size()), t);
    }
  }
  if (!has_step) {
    throw std::invalid_argument("SgdState: no '" + prefix + "step' entry in the checkpoint");
  }
  return state;
}

SGD::SGD(NamedTensors params, const SgdOptions& options)
    : params_(std::move(params)), buffers_(params_.size()), options_(options) {
  check_options(options_);
  std::unordered_set<std::string> names;
  for (const auto& [name, p] : params_) {
    if (!names.insert(name).second) {
      throw std::invalid_argument("SGD: parameter name '" + name + "' appears twice");
    }
    check_defined(p, "SGD", name.c_str());
    if (!is_floating(p.dtype()) || !p.is_leaf()) {
      throw std::invalid_argument("SGD: parameter '" + name + "' must be an f32/f64 leaf, got " +
                                  p.str());
    }
  }
}

void SGD::zero_grad() {
  for (auto& [name, p] : params_) p.set_grad(Tensor());
}

void SGD::set_lr(double lr) {
  SgdOptions o = options_;
  o.lr = lr;
  check_options(o);
  const bool changed = lr != options_.lr;
  options_ = o;
  // Rewritten only when the rate moves: on a GPU each rewrite is a launch (the Trainer sets the
  // rate every step, and multistep keeps it for whole epochs).
  if (changed) {
    for (Tensor& scalar : lr_scalars_) scalar.fill_(lr);
  }
}

void SGD::set_lr_in_tensor(bool on) {
  lr_in_tensor_ = on;
  lr_scalars_.clear();
  if (!on) return;
  for (const auto& [name, p] : params_) lr_scalar_for(p);
}

const Tensor& SGD::lr_scalar_for(const Tensor& p) {
  for (const Tensor& scalar : lr_scalars_) {
    if (scalar.device() == p.device() && scalar.dtype() == p.dtype()) return scalar;
  }
  lr_scalars_.push_back(Tensor::full({1}, options_.lr, p.dtype(), p.device()));
  return lr_scalars_.back();
}

void SGD::step() {
  const SgdStepOptions o{options_.lr, options_.momentum, options_.dampening, options_.weight_decay,
                         options_.nesterov};
  // The parameters with a gradient, grouped by device and dtype: one sgd_step_many per group.
  struct Group {
    std::vector<Tensor> params, grads, buffers;
    std::vector<bool> first_steps;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].second;
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor& buf = buffers_[i];
    bool first = false;
    if (options_.momentum != 0.0) {
      if (!buf.defined()) {
        buf = Tensor::empty(p.shape(), p.dtype(), p.device());
        first = true;
      } else if (buf.device() != p.device() || buf.dtype() != p.dtype()) {
        // The model moved after the buffer was made (Module::to): follow it, once.
        buf = buf.to(p.device()).to(p.dtype());
      }
    }
    auto same = [&p](const Group& group) {
      return group.params.front().device() == p.device() &&
             group.params.front().dtype() == p.dtype();
    };
    auto it = std::find_if(groups.begin(), groups.end(), same);
    if (it == groups.end()) it = groups.insert(groups.end(), Group{});
    it->params.push_back(p);
    it->grads.push_back(g.is_contiguous() ? g : g.contiguous());
    it->buffers.push_back(buf);
    it->first_steps.push_back(first);
  }
  for (const Group& group : groups) {
    sgd_step_many(group.params, group.grads, group.buffers, group.first_steps, o,
                  lr_in_tensor_ ? lr_scalar_for(group.params.front()) : Tensor());
    for (const Tensor& p : group.params) note_tensor_written(p);  // BN folds must recompute
  }
  ++step_count_;
}

SgdState SGD::state() const {
  SgdState s;
  s.step_count = step_count_;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (buffers_[i].defined()) s.momentum_buffers.emplace_back(params_[i].first, buffers_[i]);
  }
  return s;
}

void SGD::load_state(const SgdState& state) {
  if (state.step_count < 0) {
    throw std::invalid_argument("SGD::load_state: negative step count " +
                                std::to_string(state.step_count));
  }
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index.emplace(params_[i].first, i);
  std::vector<Tensor> buffers(params_.size());
  for (const auto& [name, src] : state.momentum_buffers) {
    auto it = index.find(name);
    if (it == index.end()) {
      throw std::invalid_argument("SGD::load_state: momentum buffer for unknown parameter '" +
                                  name + "'");
    }
    const Tensor& p = params_[it->second].second;
    if (!src.defined() || src.shape() != p.shape() || !is_floating(src.dtype())) {
      throw std::invalid_argument("SGD::load_state: momentum buffer '" + name + "' is " +
                                  (src.defined() ? src.str() : std::string("undefined")) +
                                  ", parameter is " + p.str());
    }
    Tensor buf = Tensor::empty(p.shape(), p.dtype(), p.device());
    buf.copy_(src);
    buffers[it->second] = buf;
  }
  buffers_ = std::move(buffers);
  step_count_ = state.step_count;
}

}  // namespace retort::nn
