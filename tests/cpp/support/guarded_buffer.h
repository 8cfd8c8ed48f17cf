// Memory with a guard band on both sides, on the host or on a CUDA device, for out-of-bounds canaries
// (quality.md): [guard | payload | guard]. Tests hold a host "image" of the whole allocation (guards
// included), upload it, run, download it again and compare byte by byte.
//
// CUDA code is compiled only when ATTNKIT_ENABLE_CUDA (attnkit/build_config.h); it uses the CUDA runtime
// API from plain C++, linked through the attnkit target (CUDA::cudart_static).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/types.h"

namespace attnkit::testing {

// The byte pattern of guards and gaps: A5 FF repeated, which reads as a NaN in fp16 (0xFFA5), bf16
// (0xFFA5) and fp32 (0xFFA5FFA5) at every aligned position, and differs from the quiet NaN a kernel
// would compute (0x7E00, 0x7FC0, 0x7FC00000), so an overwritten guard never looks intact.
constexpr std::uint8_t kGuardByteEven = 0xA5;
constexpr std::uint8_t kGuardByteOdd = 0xFF;
void fill_guard_pattern(std::uint8_t* bytes, std::size_t count);  // `bytes` must start at an even offset

class GuardedBuffer {
 public:
  // 4096 bytes on each side: 2048 bf16 elements, more than one 128-wide tile row of 16 heads of D = 8, so a
  // typical one-tile overrun lands in the guard; and a multiple of cudaMalloc's 256-byte alignment, so
  // the payload keeps that alignment.
  static constexpr std::size_t kGuardBytes = 4096;

  // Allocates guard + payload + guard on `device` (contents undefined until write_image). Throws
  // std::runtime_error when the allocation fails or CUDA is not compiled in.
  GuardedBuffer(Device device, std::size_t payload_bytes);
  ~GuardedBuffer();
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  Device device() const { return device_; }
  void* payload() const { return base_ + kGuardBytes; }  // what tensors point into
  std::size_t payload_bytes() const { return payload_bytes_; }
  std::size_t image_bytes() const { return payload_bytes_ + 2 * kGuardBytes; }

  // The whole allocation, guards included, copied to or from the host. Throws on a CUDA error.
  std::vector<std::uint8_t> read_image() const;
  void write_image(const std::vector<std::uint8_t>& image);

 private:
  Device device_;
  std::size_t payload_bytes_;
  std::uint8_t* base_ = nullptr;  // host or device pointer to the first guard byte
};

// Whether a CUDA device can be used by the tests; `why_not` says why not (no CUDA in this build, no
// driver, no device).
bool cuda_device_available(std::string* why_not);

// Waits for the device's work and reports any CUDA error ("" when none). A no-op on the CPU.
std::string synchronize(Device device);

}  // namespace attnkit::testing
