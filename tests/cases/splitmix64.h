// splitmix64: a tiny random generator whose stream is the same on every platform (the standard library's
// distributions are not), so that a seed names the same cases and the same tensor contents everywhere.
#pragma once

#include <cstdint>
#include <string_view>

namespace attnkit::cases {

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [low, high] (the modulo bias, below 2^-40 for our ranges, does not matter here).
  std::int64_t uniform(std::int64_t low, std::int64_t high) {
    return low + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(high - low + 1));
  }
  // Uniform double in [0, 1) with 53 random bits.
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  bool chance(int percent) { return uniform(0, 99) < percent; }

 private:
  std::uint64_t state_;
};

// FNV-1a of a name, to derive independent streams (per case, per tensor) from one seed.
inline std::uint64_t hash_name(std::string_view name) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : name) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace attnkit::cases
