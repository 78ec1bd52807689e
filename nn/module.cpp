// Module: registration, recursive modes and placement, named tensors, state-dict loading, hooks.
#include "nn/module.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace retort::nn {
namespace {

// Points every handle of `t` at `moved`'s data: the TensorImpl is shared by all handles, so
// swapping its storage is what makes a move visible to handles fetched before it.
void adopt_storage(const Tensor& t, const Tensor& moved) {
  TensorImpl* impl = t.impl();
  impl->storage = moved.storage();
  impl->strides = moved.strides();
  impl->offset = moved.offset();
  impl->dtype = moved.dtype();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

}  // namespace

Tensor Module::operator()(const Tensor& x) {
  Tensor y = forward(x);
  run_forward_hooks(x, y);
  return y;
}

void Module::run_forward_hooks(const Tensor& input, const Tensor& output) {
  for (auto& [id, hook] : hooks_) hook(*this, input, output);
}

void Module::train(bool on) {
  // Training may write anything (BN running statistics, an optimiser's steps): a cache made in
  // evaluation must not outlive it.
  if (on) ++state_version_;
  training_ = on;
  on_mode_change();
  for (auto& [name, child] : children_) child->train(on);
}

template <class Fn>
void Module::for_each_tensor(Fn&& fn) {
  for (auto& [name, p] : parameters_) fn(p, /*is_parameter=*/true, /*follows_device=*/true);
  for (size_t i = 0; i < buffers_.size(); ++i) {
    fn(buffers_[i].second, /*is_parameter=*/false, static_cast<bool>(buffer_follows_device_[i]));
  }
  for (auto& [name, child] : children_) child->for_each_tensor(fn);
}

void Module::to(Device device) {
  require_available(device);
  mark_state_changed();
  for_each_tensor([&](Tensor& t, bool /*is_parameter*/, bool follows_device) {
    if (!follows_device || t.device() == device) return;
    adopt_storage(t, t.to(device));
    TensorImpl* impl = t.impl();
    if (impl->grad.defined()) impl->grad = impl->grad.to(device);
  });
}

void Module::to(DType dtype) {
  if (!is_floating(dtype)) {
    throw std::invalid_argument("Module::to: parameters can only be converted to f32 or f64, got " +
                                std::string(dtype_name(dtype)));
  }
  mark_state_changed();
  for_each_tensor([&](Tensor& t, bool /*is_parameter*/, bool /*follows_device*/) {
    if (!is_floating(t.dtype()) || t.dtype() == dtype) return;
    adopt_storage(t, t.to(dtype));
    TensorImpl* impl = t.impl();
    if (impl->grad.defined()) impl->grad = impl->grad.to(dtype);
  });
}

void Module::collect(const std::string& prefix, NamedTensors* params, NamedTensors* buffers) const {
  if (params != nullptr) {
    for (const auto& [name, p] : parameters_) params->emplace_back(prefix + name, p);
  }
  if (buffers != nullptr) {
    for (const auto& [name, b] : buffers_) buffers->emplace_back(prefix + name, b);
  }
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, buffers);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", &out, nullptr);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", nullptr, &out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, p] : named_parameters()) out.push_back(p);
  return out;
}

NamedTensors Module::state_dict() const {
  // torch's order: each module's own parameters, then its own buffers, then its children.
  NamedTensors out;
  collect("", &out, &out);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, p] : named_parameters()) n += p.numel();
  return n;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [name, child] : children_) {
    for (auto& [sub, m] : child->named_modules()) {
      out.emplace_back(sub.empty() ? name : name + "." + sub, m);
    }
  }
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, const Module*>> out;
  for (auto& [name, m] : const_cast<Module*>(this)->named_modules()) out.emplace_back(name, m);
  return out;
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  const NamedTensors own = state_dict();
  std::unordered_map<std::string, Tensor> targets;
  for (const auto& [name, t] : own) targets.emplace(name, t);

  std::vector<std::string> missing, unexpected, mismatched, duplicates;
  std::unordered_set<std::string> seen;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  for (const auto& [name, src] : state) {
    if (!seen.insert(name).second) {
      duplicates.push_back(name);
      continue;
    }
    auto it = targets.find(name);
    if (it == targets.end()) {
      unexpected.push_back(name);
      continue;
    }
    const Tensor& dst = it->second;
    if (!src.defined()) {
      mismatched.push_back(name + ": checkpoint tensor is undefined");
    } else if (src.shape() != dst.shape()) {
      mismatched.push_back(name + ": checkpoint " + shape_str(src.shape()) + " vs model " +
                           shape_str(dst.shape()));
    } else if (is_floating(src.dtype()) != is_floating(dst.dtype()) ||
               (!is_floating(dst.dtype()) && src.dtype() != dst.dtype())) {
      mismatched.push_back(name + ": checkpoint dtype " + std::string(dtype_name(src.dtype())) +
                           " vs model " + std::string(dtype_name(dst.dtype())));
    } else {
      copies.emplace_back(dst, src);
    }
  }
  for (const auto& [name, t] : own) {
    if (!seen.count(name)) missing.push_back(name);
  }
  const bool fail = !mismatched.empty() || !duplicates.empty() ||
                    (strict && (!missing.empty() || !unexpected.empty()));
  if (fail) {
    std::ostringstream msg;
    msg << "load_state_dict: the state does not fit this " << type_name() << ":";
    if (strict && !missing.empty()) {
      msg << "\n  missing keys (" << missing.size() << "): " << join(missing);
    }
    if (strict && !unexpected.empty()) {
      msg << "\n  unexpected keys (" << unexpected.size() << "): " << join(unexpected);
    }
    if (!mismatched.empty()) {
      msg << "\n  mismatched (" << mismatched.size() << "): " << join(mismatched);
    }
    if (!duplicates.empty()) {
      msg << "\n  duplicate keys (" << duplicates.size() << "): " << join(duplicates);
    }
    throw std::invalid_argument(msg.str());
  }
  mark_state_changed();
  for (auto& [dst, src] : copies) dst.copy_(src);
}

void Module::mark_state_changed() {
  ++state_version_;
  for (auto& [name, child] : children_) child->mark_state_changed();
}

void Module::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  for (auto& [name, child] : children_) child->collect_conv_bn_pairs(out);
}

void Module::zero_grad() {
  for (auto& [name, p] : named_parameters()) p.set_grad(Tensor());
}

int64_t Module::add_forward_hook(ForwardHook hook) {
  const int64_t id = next_hook_id_++;
  hooks_.emplace_back(id, std::move(hook));
  return id;
}

void Module::remove_forward_hook(int64_t id) {
  std::erase_if(hooks_, [id](const auto& entry) { return entry.first == id; });
}

void Module::check_new_name(const std::string& name, const char* what) const {
  if (name.empty() || name.find('.') != std::string::npos) {
    throw std::invalid_argument(type_name() + ": " + what + " name '" + name +
                                "' must be non-empty and contain no '.'");
  }
  auto taken = [&](const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& e) { return e.first == name; });
  };
  if (taken(parameters_) || taken(buffers_) || taken(children_)) {
    throw std::invalid_argument(type_name() + ": name '" + name + "' is already registered");
  }
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_new_name(name, "parameter");
  check_defined(value, "register_parameter", name.c_str());
  value.set_requires_grad(true);
  parameters_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value, bool follows_device) {
  check_new_name(name, "buffer");
  check_defined(value, "register_buffer", name.c_str());
  buffers_.emplace_back(name, value);
  buffer_follows_device_.push_back(follows_device);
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "module");
  if (!module) throw std::invalid_argument(type_name() + ": child '" + name + "' is null");
  children_.emplace_back(name, std::move(module));
}

}  // namespace retort::nn
