#include "buffers.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "attnkit/build_config.h"

#if ATTNKIT_ENABLE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace attnkit::cli {
namespace {

// 256 bytes: more than any alignment a kernel asks of its pointers, and what cudaMalloc gives.
constexpr std::size_t kHostAlignment = 256;

#if ATTNKIT_ENABLE_CUDA
void check_cuda(cudaError_t error, const char* what) {
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}
#else
[[noreturn]] void no_cuda() {
  throw std::runtime_error("this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF): cannot use GPU memory");
}
#endif

}  // namespace

Buffer::Buffer(Device device, std::size_t bytes) : bytes_(bytes), device_(device) {
  if (bytes == 0) return;
  if (device.kind == DeviceKind::kCPU) {
    const std::size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    data_ = std::aligned_alloc(kHostAlignment, rounded);
    if (data_ == nullptr) throw std::runtime_error("out of host memory: " + std::to_string(bytes) + " bytes");
    return;
  }
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaSetDevice(device.index), "cudaSetDevice");
  check_cuda(cudaMalloc(&data_, bytes), ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str());
#else
  no_cuda();
#endif
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)), device_(other.device_) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = other.device_;
  }
  return *this;
}

void Buffer::release() {
  if (data_ == nullptr) return;
  if (device_.kind == DeviceKind::kCPU) {
    std::free(data_);
  } else {
#if ATTNKIT_ENABLE_CUDA
    cudaFree(data_);
#endif
  }
  data_ = nullptr;
  bytes_ = 0;
}

void Buffer::upload(const void* host, std::size_t bytes) {
  if (bytes > bytes_) throw std::logic_error("Buffer::upload: more bytes than the buffer holds");
  if (bytes == 0) return;
  if (device_.kind == DeviceKind::kCPU) {
    std::memcpy(data_, host, bytes);
    return;
  }
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
#else
  no_cuda();
#endif
}

void Buffer::download(void* host, std::size_t bytes) const {
  if (bytes > bytes_) throw std::logic_error("Buffer::download: more bytes than the buffer holds");
  if (bytes == 0) return;
  if (device_.kind == DeviceKind::kCPU) {
    std::memcpy(host, data_, bytes);
    return;
  }
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
#else
  no_cuda();
#endif
}

void Buffer::fill_bytes(std::uint8_t value) {
  if (bytes_ == 0) return;
  if (device_.kind == DeviceKind::kCPU) {
    std::memset(data_, value, bytes_);
    return;
  }
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaMemset(data_, value, bytes_), "cudaMemset");
#else
  no_cuda();
#endif
}

void synchronize(Device device) {
  if (device.kind == DeviceKind::kCPU) return;
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaDeviceSynchronize(), "a CUDA launch failed (cudaDeviceSynchronize)");
#else
  no_cuda();
#endif
}

}  // namespace attnkit::cli
