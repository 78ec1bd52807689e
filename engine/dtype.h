// Element types a Tensor can hold, with their sizes and names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace retort {

// f32 is the working type; f64 exists on the CPU for gradient checks; i64 holds labels and
// indices, i32 pooling argmax, u8 raw image bytes.
enum class DType : uint8_t { f32, f64, i64, i32, u8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i64: return 8;
    case DType::i32: return 4;
    case DType::u8: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i64: return "i64";
    case DType::i32: return "i32";
    case DType::u8: return "u8";
  }
  return "?";
}

constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::f64; }

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> { static constexpr DType value = DType::f32; };
template <>
struct DTypeOf<double> { static constexpr DType value = DType::f64; };
template <>
struct DTypeOf<int64_t> { static constexpr DType value = DType::i64; };
template <>
struct DTypeOf<int32_t> { static constexpr DType value = DType::i32; };
template <>
struct DTypeOf<uint8_t> { static constexpr DType value = DType::u8; };
template <typename T>
inline constexpr DType dtype_of = DTypeOf<T>::value;

}  // namespace retort
