// Tensor: a cheap handle to shared storage plus shape, strides, offset, dtype, and autograd state.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/shape.h"
#include "engine/storage.h"

namespace retort {

class Generator;
class Node;
struct TensorImpl;

// A Tensor is a handle: copying it shares the same data and autograd state (like a PyTorch
// tensor). A default-constructed Tensor is "undefined" and most calls on it throw.
//
// Gradient contract: backward() *adds* into the .grad of every leaf that requires grad (the first
// contribution allocates it). Whoever owns the parameters (the optimiser's zero_grad) resets
// them. Non-leaf tensors never keep a grad.
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- creation -------------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  // Copies host values into a new tensor of the given shape (numel must match).
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu());
  // Uniform in (low, high] and normal(mean, std), drawn from `gen` (Philox; device-independent).
  static Tensor rand(const Shape& shape, Generator& gen, double low = 0.0, double high = 1.0,
                     DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor randn(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0,
                      DType dtype = DType::f32, Device device = Device::cpu());

  // --- metadata -------------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t dim) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;
  // "Tensor[64, 10] f32 cpu"
  std::string str() const;

  // --- data access (no autograd) ---------------------------------------------------------------
  // Pointer to the first element; checks the dtype. The tensor may be non-contiguous.
  template <typename T>
  T* data() const;
  void* raw_data() const;
  // Host copy of the elements in row-major order (any device, any strides).
  template <typename T>
  std::vector<T> to_vector() const;
  // The single element as double; throws unless numel() == 1.
  double item() const;

  // --- autograd ------------------------------------------------------------------------------
  bool requires_grad() const;
  // Marks a leaf as needing gradients; throws on a non-leaf or a non-floating tensor.
  Tensor& set_requires_grad(bool requires_grad);
  bool is_leaf() const;
  const std::shared_ptr<Node>& grad_fn() const;
  // The accumulated gradient of a leaf (undefined until a backward reaches it).
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;
  // Runs backpropagation from this tensor. `grad` may be omitted for a single-element tensor.
  // Saved tensors are released as the walk goes unless retain_graph is true.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  // Same data, no autograd history.
  Tensor detach() const;

  // --- differentiable views and copies (engine/ops/view.cpp) -----------------------------------
  Tensor reshape(const Shape& shape) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;

  // --- in-place, outside autograd (parameter updates, initialisation, buffers) -----------------
  // Copies src's values (same shape; any device and strides; dtype converted) into this tensor.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  const TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

// The state behind a Tensor handle.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  Tensor grad;                    // leaves only
};

// Throws std::invalid_argument when `t` is undefined, naming the op and the argument.
void check_defined(const Tensor& t, const char* op, const char* arg);
// Throws when a and b are on different devices or have different dtypes, naming the op.
void check_same_device_dtype(const Tensor& a, const Tensor& b, const char* op);

template <typename T>
T* Tensor::data() const {
  const TensorImpl& t = checked();
  if (t.dtype != dtype_of<T>) {
    throw std::invalid_argument("Tensor::data: tensor holds " + std::string(dtype_name(t.dtype)) +
                                ", requested " + std::string(dtype_name(dtype_of<T>)));
  }
  return static_cast<T*>(t.storage->data()) + t.offset;
}

}  // namespace retort
