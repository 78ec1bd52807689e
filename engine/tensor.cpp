// Tensor creation, metadata, host access, device/dtype copies, and the autograd accessors.
#include "engine/tensor.h"

#include <cstring>
#include <sstream>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/rng.h"
#include "engine/strided.h"
#include "kernels/elementwise.h"
#include "kernels/fill.h"

namespace retort {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

void check_defined(const Tensor& t, const char* op, const char* arg) {
  if (!t.defined()) {
    throw std::invalid_argument(std::string(op) + ": argument '" + arg + "' is an undefined tensor");
  }
}

void check_same_device_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.device() != b.device()) {
    throw std::invalid_argument(std::string(op) + ": tensors are on different devices (" +
                                a.device().str() + " and " + b.device().str() + ")");
  }
  if (a.dtype() != b.dtype()) {
    throw std::invalid_argument(std::string(op) + ": tensors have different dtypes (" +
                                std::string(dtype_name(a.dtype())) + " and " +
                                std::string(dtype_name(b.dtype())) + ")");
  }
}

const TensorImpl& Tensor::checked() const {
  if (!impl_) throw std::logic_error("operation on an undefined Tensor");
  return *impl_;
}

// --- creation ------------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("Tensor::empty: negative size in shape " + shape_str(shape));
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape)) {
    throw std::invalid_argument("Tensor::from_vector: " + std::to_string(values.size()) +
                                " values do not fill shape " + shape_str(shape));
  }
  Tensor t = empty(shape, dtype_of<T>, device);
  copy_bytes(t.raw_data(), device, values.data(), Device::cpu(), values.size() * sizeof(T));
  return t;
}

template Tensor Tensor::from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector<double>(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Device);

Tensor Tensor::rand(const Shape& shape, Generator& gen, double low, double high, DType dtype,
                    Device device) {
  Tensor t = empty(shape, dtype, device);
  const int64_t n = t.numel();
  const uint64_t offset = gen.advance(kernels::philox_counters(n));
  dispatch<OpId::random>(device, dtype, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::fill_uniform(ctx, n, gen.seed(), offset, static_cast<T>(low), static_cast<T>(high),
                          t.data<T>());
  });
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, double mean, double std, DType dtype,
                     Device device) {
  Tensor t = empty(shape, dtype, device);
  const int64_t n = t.numel();
  const uint64_t offset = gen.advance(kernels::philox_counters(n));
  dispatch<OpId::random>(device, dtype, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::fill_normal(ctx, n, gen.seed(), offset, static_cast<T>(mean), static_cast<T>(std),
                         t.data<T>());
  });
  return t;
}

// --- metadata ------------------------------------------------------------------------------------

const Shape& Tensor::shape() const { return checked().shape; }
const Shape& Tensor::strides() const { return checked().strides; }
int64_t Tensor::offset() const { return checked().offset; }
int64_t Tensor::numel() const { return shape_numel(checked().shape); }
DType Tensor::dtype() const { return checked().dtype; }
Device Tensor::device() const { return checked().storage->device(); }
const std::shared_ptr<Storage>& Tensor::storage() const { return checked().storage; }

int64_t Tensor::size(int64_t dim) const { return shape()[wrap_dim(dim, this->dim(), "size")]; }

bool Tensor::is_contiguous() const {
  const TensorImpl& t = checked();
  int64_t expected = 1;
  for (size_t i = t.shape.size(); i-- > 0;) {
    if (t.shape[i] == 1) continue;
    if (t.strides[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream out;
  out << "Tensor" << shape_str(shape()) << " " << dtype_name(dtype()) << " " << device().str();
  return out.str();
}

void* Tensor::raw_data() const {
  const TensorImpl& t = checked();
  return static_cast<char*>(t.storage->data()) + t.offset * dtype_size(t.dtype);
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  if (dtype() != dtype_of<T>) {
    throw std::invalid_argument("Tensor::to_vector: tensor holds " +
                                std::string(dtype_name(dtype())) + ", requested " +
                                std::string(dtype_name(dtype_of<T>)));
  }
  Tensor host = detach().contiguous().to(Device::cpu());
  std::vector<T> out(static_cast<size_t>(host.numel()));
  copy_bytes(out.data(), Device::cpu(), host.raw_data(), Device::cpu(), out.size() * sizeof(T));
  return out;
}

template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

double Tensor::item() const {
  if (numel() != 1) {
    throw std::invalid_argument("Tensor::item: needs exactly one element, tensor has shape " +
                                shape_str(shape()));
  }
  switch (dtype()) {
    case DType::f32: return to_vector<float>()[0];
    case DType::f64: return to_vector<double>()[0];
    case DType::i64: return static_cast<double>(to_vector<int64_t>()[0]);
    case DType::i32: return to_vector<int32_t>()[0];
    case DType::u8: return to_vector<uint8_t>()[0];
  }
  return 0.0;
}

// --- autograd accessors --------------------------------------------------------------------------

bool Tensor::requires_grad() const { return checked().requires_grad; }
bool Tensor::is_leaf() const { return checked().grad_fn == nullptr; }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return checked().grad_fn; }
Tensor Tensor::grad() const { return checked().grad; }

Tensor& Tensor::set_requires_grad(bool requires_grad) {
  if (!is_leaf()) {
    throw std::invalid_argument(
        "set_requires_grad: only leaf tensors can change requires_grad; this one comes from op '" +
        std::string(grad_fn()->name()) + "' (use detach() first)");
  }
  if (requires_grad && !is_floating(dtype())) {
    throw std::invalid_argument("set_requires_grad: a " + std::string(dtype_name(dtype())) +
                                " tensor cannot require grad (only f32/f64)");
  }
  impl_->requires_grad = requires_grad;
  return *this;
}

void Tensor::set_grad(const Tensor& grad) const {
  if (grad.defined() && (grad.shape() != shape() || grad.dtype() != dtype())) {
    throw std::invalid_argument("set_grad: gradient " + grad.str() + " does not match tensor " +
                                str());
  }
  impl_->grad = grad;
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  run_backward(*this, grad, retain_graph);
}

Tensor Tensor::detach() const {
  const TensorImpl& t = checked();
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage;
  impl->shape = t.shape;
  impl->strides = t.strides;
  impl->offset = t.offset;
  impl->dtype = t.dtype;
  return Tensor(std::move(impl));
}

// --- device / dtype copies -----------------------------------------------------------------------

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return detach();
  Tensor src = detach().contiguous();
  Tensor out = empty(shape(), dtype(), device);
  copy_bytes(out.raw_data(), device, src.raw_data(), src.device(),
             static_cast<size_t>(numel()) * dtype_size(dtype()));
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return detach();
  Tensor out = empty(shape(), dtype, device());
  out.copy_(*this);
  return out;
}

namespace {

// Converts contiguous `src` into contiguous `dst` of another dtype, on the CPU.
void convert_host(const Tensor& src, Tensor& dst) {
  const auto& ctx = cpu_context();
  const int64_t n = src.numel();
  auto fail = [&] {
    throw std::invalid_argument("copy_: conversion from " + std::string(dtype_name(src.dtype())) +
                                " to " + std::string(dtype_name(dst.dtype())) +
                                " is not supported");
  };
  switch (src.dtype()) {
    case DType::f32:
      if (dst.dtype() != DType::f64) fail();
      kernels::convert(ctx, n, src.data<float>(), dst.data<double>());
      break;
    case DType::f64:
      if (dst.dtype() != DType::f32) fail();
      kernels::convert(ctx, n, src.data<double>(), dst.data<float>());
      break;
    case DType::i64:
      if (dst.dtype() == DType::f32) kernels::convert(ctx, n, src.data<int64_t>(), dst.data<float>());
      else if (dst.dtype() == DType::f64) kernels::convert(ctx, n, src.data<int64_t>(), dst.data<double>());
      else fail();
      break;
    case DType::u8:
      if (dst.dtype() == DType::f32) kernels::convert(ctx, n, src.data<uint8_t>(), dst.data<float>());
      else if (dst.dtype() == DType::f64) kernels::convert(ctx, n, src.data<uint8_t>(), dst.data<double>());
      else fail();
      break;
    default: fail();
  }
}

// Writes contiguous `src` (same device and dtype) into `dst`, which may be strided.
void write_into(const Tensor& src, Tensor& dst) {
  if (dst.is_contiguous()) {
    copy_bytes(dst.raw_data(), dst.device(), src.raw_data(), src.device(),
               static_cast<size_t>(src.numel()) * dtype_size(src.dtype()));
    return;
  }
  const kernels::StridedShape s = strided_shape_of(dst);
  if (dst.dtype() == DType::i64 && dst.device().is_cpu()) {
    kernels::strided_scatter(cpu_context(), s, src.data<int64_t>(), dst.data<int64_t>());
    return;
  }
  if (const int words = words_per_element(dst.dtype()); words > 0) {
    // Integers on a device: moved as 32-bit words by the f32 copy kernel, bit for bit.
    dispatch<OpId::copy>(dst.device(), DType::f32, [&](const auto& ctx, auto) {
      kernels::strided_scatter(ctx, as_words(s, words), static_cast<const float*>(src.raw_data()),
                               static_cast<float*>(dst.raw_data()));
    });
    return;
  }
  dispatch<OpId::copy>(dst.device(), dst.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::strided_scatter(ctx, s, src.data<T>(), dst.data<T>());
  });
}

}  // namespace

Tensor& Tensor::copy_(const Tensor& src) {
  check_defined(src, "copy_", "src");
  if (src.shape() != shape()) {
    throw std::invalid_argument("copy_: source shape " + shape_str(src.shape()) +
                                " does not match destination shape " + shape_str(shape()));
  }
  Tensor staged = src.detach().contiguous();
  if (staged.dtype() != dtype() && staged.device() == device() && device().is_cuda() &&
      dtype() == DType::f32 && (staged.dtype() == DType::i64 || staged.dtype() == DType::u8)) {
    // i64/u8 -> f32 on the device itself (labels to floats, raw pixels to floats).
    Tensor converted = empty(shape(), dtype(), device());
    dispatch<OpId::copy>(device(), DType::f32, [&](const auto& ctx, auto) {
      if constexpr (!std::is_same_v<std::decay_t<decltype(ctx)>, kernels::CpuContext>) {
        if (staged.dtype() == DType::i64) {
          kernels::convert(ctx, numel(), staged.data<int64_t>(), converted.data<float>());
        } else {
          kernels::convert(ctx, numel(), staged.data<uint8_t>(), converted.data<float>());
        }
      }
    });
    staged = converted;
  } else if (staged.dtype() != dtype()) {
    // Other conversions run on the host (f64 never lives on a device); this waits for the device.
    Tensor host = staged.to(Device::cpu());
    Tensor converted = empty(shape(), dtype(), Device::cpu());
    convert_host(host, converted);
    staged = converted;
  }
  if (staged.device() != device()) staged = staged.to(device());
  write_into(staged, *this);
  return *this;
}

Tensor& Tensor::fill_(double value) {
  if (!is_contiguous()) {
    Tensor tmp = full(shape(), value, dtype(), device());
    return copy_(tmp);
  }
  const int64_t n = numel();
  switch (dtype()) {
    case DType::i64:
    case DType::i32:
    case DType::u8: {
      if (device().is_cpu()) {
        if (dtype() == DType::i64) {
          kernels::fill_value(cpu_context(), n, static_cast<int64_t>(value), data<int64_t>());
        } else if (dtype() == DType::i32) {
          kernels::fill_value(cpu_context(), n, static_cast<int32_t>(value), data<int32_t>());
        } else {
          std::memset(raw_data(), static_cast<uint8_t>(value), static_cast<size_t>(n));
        }
        return *this;
      }
      // Integer tensors on a device are small (labels, indices, counters): fill on the host and
      // upload, which queues behind the device's work without waiting for it.
      Tensor host = empty(shape(), dtype(), Device::cpu());
      host.fill_(value);
      copy_bytes(raw_data(), device(), host.raw_data(), Device::cpu(),
                 static_cast<size_t>(n) * dtype_size(dtype()));
      return *this;
    }
    default:
      dispatch<OpId::fill>(device(), dtype(), [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::fill_value(ctx, n, static_cast<T>(value), data<T>());
      });
      return *this;
  }
}

}  // namespace retort
