// Reading one element of a host tensor as float64: what the dense and linear references share.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>

#include "attnkit/numeric.h"
#include "attnkit/types.h"

namespace attnkit::reference {

// One element of a host tensor, converted exactly to double. `offset` is in elements. Empty for a
// dtype this function does not know.
inline std::optional<double> load_element(const TensorRef& t, std::int64_t offset) {
  const char* base = static_cast<const char*>(t.data);
  switch (t.dtype) {
    case DType::kFloat64: {
      double value;
      std::memcpy(&value, base + offset * 8, 8);
      return value;
    }
    case DType::kFloat32: {
      float value;
      std::memcpy(&value, base + offset * 4, 4);
      return value;
    }
    case DType::kFloat16: {
      std::uint16_t bits;
      std::memcpy(&bits, base + offset * 2, 2);
      return fp16_to_float(bits);
    }
    case DType::kBFloat16: {
      std::uint16_t bits;
      std::memcpy(&bits, base + offset * 2, 2);
      return bf16_to_float(bits);
    }
    case DType::kInt32: {
      std::int32_t value;
      std::memcpy(&value, base + offset * 4, 4);
      return value;
    }
  }
  return std::nullopt;
}

}  // namespace attnkit::reference
