// Module: the base of layers and models: parameters, buffers, children, modes, state dicts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace retort::nn {

class Conv2d;
class Module;

// A convolution whose output feeds one batch norm and nothing else, so that in evaluation the BN
// can be folded into the conv (nn/fold.h). `bn` is a BatchNorm2d (with a Conv2d) or a
// SwitchableBatchNorm2d (with a SlimmableConv2d on the same width switch).
struct ConvBnPair {
  Conv2d* conv = nullptr;
  Module* bn = nullptr;
};

// Tensors with PyTorch-style dotted names ("layer1.0.conv1.weight"), in registration order.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// A Module owns named parameters (learnable leaves), buffers (state that is saved but not
// learned: BN running statistics) and child modules, all kept in registration order so the
// names and order of named_parameters() / state_dict() are those of the PyTorch reference model.
//
// Tensor identity: the Tensor handles a module hands out (parameters(), state_dict(), a layer's
// weight()) share their TensorImpl with the module's own. to(Device) and to(DType) replace the
// storage *inside* that TensorImpl, so every handle held anywhere (an optimiser's list, the
// autograd graph's leaf edges) sees the moved data without being fetched again.
// load_state_dict copies values into the existing tensors for the same reason.
//
// Gradients: backward() adds into each parameter's .grad; zero_grad() resets them to undefined
// (the optimiser's zero_grad does the same for its parameter list).
class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation. Parents call children through operator(), which also runs forward hooks.
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x);
  // "Conv2d", "BatchNorm2d", "ResNet", ...: for summaries and error messages.
  virtual std::string type_name() const = 0;

  // --- modes (recursive) ------------------------------------------------------------------------
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // --- placement (recursive, in place; see "Tensor identity") -----------------------------------
  // Moves parameters, their gradients and device buffers. Host buffers (BN num_batches_tracked, a
  // counter the host increments) stay in host memory on every device.
  void to(Device device);
  // Converts floating parameters, gradients and buffers (e.g. to f64 for gradient checks);
  // integer buffers keep their dtype.
  void to(DType dtype);

  // --- introspection
  // ------------------------------------------------------------------------------ Own parameters,
  // then own buffers, then each child's (recursively), as torch's state_dict.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  NamedTensors state_dict() const;
  // Sum of the element counts of all parameters (buffers excluded), as models.md counts.
  int64_t num_parameters() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const {
    return children_;
  }
  // This module ("" as its name) and every descendant, depth first in registration order.
  std::vector<std::pair<std::string, Module*>> named_modules();
  std::vector<std::pair<std::string, const Module*>> named_modules() const;
  // Own parameters only (not the children's).
  const NamedTensors& own_parameters() const { return parameters_; }

  // --- state ------------------------------------------------------------------------------------
  // Copies every entry of `state` into the tensor of the same name (values converted to the
  // tensor's dtype and device). Nothing is written unless the whole load is valid. Throws
  // std::invalid_argument listing every missing key (strict), every unexpected key (strict), and
  // every shape mismatch (always) with both shapes.
  void load_state_dict(const NamedTensors& state, bool strict = true);
  // Sets every parameter's gradient to undefined.
  void zero_grad();
  // A counter that moves whenever this module's tensors may have changed under it: to(),
  // load_state_dict(), entering training mode, a training-mode BN forward (running statistics),
  // and mark_state_changed(). Caches derived from the tensors (folded BN, nn/fold.h) compare it.
  uint64_t state_version() const { return state_version_; }
  // Moves the state version of this module and every descendant: call it after writing into
  // parameters or buffers by other means (Tensor::copy_ on a handle) while a cache is alive.
  void mark_state_changed();

  // --- batch-norm folding (nn/fold.h) -----------------------------------------------------------
  // Appends the conv -> BN pairs this module can fold in evaluation: those whose conv output
  // reaches the BN and nothing else (not a residual sum, not a second consumer). The default
  // declares none of its own and asks each child; a module that knows such a pair among its
  // children overrides it, declares the pair, and calls the default for its children's pairs. A
  // pair declared wrongly changes the folded forward's result, so declare only what the forward
  // code guarantees, not what the registration order suggests.
  virtual void collect_conv_bn_pairs(std::vector<ConvBnPair>& out);

  // --- forward hooks
  // -------------------------------------------------------------------------------- Called after
  // forward() when the module is invoked through operator(). Returns an id for remove_forward_hook.
  using ForwardHook =
      std::function<void(Module& module, const Tensor& input, const Tensor& output)>;
  int64_t add_forward_hook(ForwardHook hook);
  void remove_forward_hook(int64_t id);
  bool has_forward_hooks() const { return !hooks_.empty(); }

 protected:
  // Registers a parameter: a leaf that requires grad. Returns the handle the module keeps.
  Tensor register_parameter(const std::string& name, Tensor value);
  // Registers a buffer; follows_device = false keeps it in host memory (see to(Device)).
  Tensor register_buffer(const std::string& name, Tensor value, bool follows_device = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }
  // Called by train() on each module after its flag changed (most layers need nothing).
  virtual void on_mode_change() {}
  // Moves this module's own state version (not its children's): a layer that writes its own
  // state during forward (BatchNorm2d's running statistics) calls it.
  void bump_state_version() { ++state_version_; }
  // Runs the forward hooks as operator() does after forward(): for a layer's entry point other
  // than forward() (BatchNorm2d::forward_relu) that stands for a call through operator().
  void run_forward_hooks(const Tensor& input, const Tensor& output);

 private:
  void check_new_name(const std::string& name, const char* what) const;
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void collect(const std::string& prefix, NamedTensors* params, NamedTensors* buffers) const;
  template <class Fn>
  void for_each_tensor(Fn&& fn);

  NamedTensors parameters_;
  NamedTensors buffers_;
  std::vector<bool> buffer_follows_device_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::vector<std::pair<int64_t, ForwardHook>> hooks_;
  int64_t next_hook_id_ = 0;
  bool training_ = true;
  uint64_t state_version_ = 0;
};

}  // namespace retort::nn
