// Owned memory on the CPU or a CUDA device, for the tensors the tool allocates. GPU memory comes from
// cudaMalloc (plain device memory, never managed) and exists only in builds with ATTNKIT_ENABLE_CUDA.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attnkit/types.h"

namespace attnkit::cli {

class Buffer {
 public:
  Buffer() = default;
  // Throws std::runtime_error when the memory cannot be had (or the build has no CUDA).
  Buffer(Device device, std::size_t bytes);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  void upload(const void* host, std::size_t bytes);    // host -> this buffer, from its start
  void download(void* host, std::size_t bytes) const;  // this buffer -> host, from its start
  // Every byte set to `value`. 0xff poisons: 0xffff is a NaN in bf16 and fp16, 0xffffffff in fp32.
  void fill_bytes(std::uint8_t value);

 private:
  void release();

  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Device device_ = Device::cpu();
};

// Waits for all work on the current CUDA device (no-op on the CPU); throws on a CUDA error.
void synchronize(Device device);

}  // namespace attnkit::cli
