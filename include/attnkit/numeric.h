// Host conversions between fp32 and the 16-bit float formats (round to nearest even), for callers that
// prepare or read fp16/bf16 tensors on the CPU. Storage is a raw std::uint16_t.
#pragma once

#include <cstdint>
#include <cstring>

namespace attnkit {

inline float bf16_to_float(std::uint16_t bits) {
  std::uint32_t word = static_cast<std::uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

inline std::uint16_t float_to_bf16(float value) {
  std::uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  if ((word & 0x7f800000u) == 0x7f800000u && (word & 0x007fffffu) != 0) {
    return static_cast<std::uint16_t>((word >> 16) | 0x0040u);  // keep NaN a (quiet) NaN
  }
  word += 0x7fffu + ((word >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<std::uint16_t>(word >> 16);
}

inline float fp16_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  std::uint32_t exponent = (bits >> 10) & 0x1fu;
  std::uint32_t mantissa = bits & 0x3ffu;
  std::uint32_t word;
  if (exponent == 0x1fu) {
    word = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    word = sign | ((exponent + 112u) << 23) | (mantissa << 13);  // normal: rebias 15 -> 127
  } else if (mantissa == 0) {
    word = sign;  // signed zero
  } else {
    // Subnormal half: value = mantissa * 2^-24; normalise it into an fp32 normal.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    word = sign | (static_cast<std::uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

inline std::uint16_t float_to_fp16(float value) {
  std::uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  const std::uint16_t sign = static_cast<std::uint16_t>((word >> 16) & 0x8000u);
  const std::uint32_t abs_word = word & 0x7fffffffu;
  if (abs_word >= 0x7f800000u) {  // inf or NaN
    return static_cast<std::uint16_t>(sign | 0x7c00u | (abs_word > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs_word >= 0x477ff000u) {  // rounds past 65504: overflow to inf
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (abs_word < 0x38800000u) {  // below the smallest fp16 normal (2^-14): subnormal or zero
    if (abs_word < 0x33000000u) return sign;  // below half of the smallest subnormal (2^-25)
    const std::uint32_t exponent = abs_word >> 23;
    const std::uint32_t mantissa = (abs_word & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exponent;  // half = mantissa * 2^(exponent - 126): 14..24
    std::uint32_t half = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t rounded = abs_word + 0xfffu + ((abs_word >> 13) & 1u);  // ties to even at bit 13
  return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

}  // namespace attnkit
