#include "tests/cpp/support/guarded_buffer.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "attnkit/build_config.h"

#if ATTNKIT_ENABLE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace attnkit::testing {

void fill_guard_pattern(std::uint8_t* bytes, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) bytes[i] = (i % 2 == 0) ? kGuardByteEven : kGuardByteOdd;
}

namespace {

#if ATTNKIT_ENABLE_CUDA
void check_cuda(cudaError_t error, const char* what) {
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}
#endif

#if !ATTNKIT_ENABLE_CUDA
[[noreturn]] void no_cuda() {
  throw std::runtime_error("GuardedBuffer: a CUDA buffer was asked for, but this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF)");
}
#endif

}  // namespace

GuardedBuffer::GuardedBuffer(Device device, std::size_t payload_bytes) : device_(device), payload_bytes_(payload_bytes) {
  if (device.kind == DeviceKind::kCPU) {
    // 4096-byte alignment of the allocation keeps the payload as aligned as a cudaMalloc one.
    const std::size_t bytes = (image_bytes() + 4095) / 4096 * 4096;
    base_ = static_cast<std::uint8_t*>(std::aligned_alloc(4096, bytes));
    if (base_ == nullptr) throw std::runtime_error("GuardedBuffer: host allocation of " + std::to_string(bytes) + " bytes failed");
    return;
  }
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaSetDevice(device.index), "cudaSetDevice");
  void* pointer = nullptr;
  check_cuda(cudaMalloc(&pointer, image_bytes()), "cudaMalloc");
  base_ = static_cast<std::uint8_t*>(pointer);
#else
  no_cuda();
#endif
}

GuardedBuffer::~GuardedBuffer() {
  if (device_.kind == DeviceKind::kCPU) {
    std::free(base_);
    return;
  }
#if ATTNKIT_ENABLE_CUDA
  cudaFree(base_);  // a destructor cannot report; a failing free shows up in the next CUDA call
#endif
}

std::vector<std::uint8_t> GuardedBuffer::read_image() const {
  std::vector<std::uint8_t> image(image_bytes());
  if (device_.kind == DeviceKind::kCPU) {
    std::memcpy(image.data(), base_, image.size());
    return image;
  }
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaSetDevice(device_.index), "cudaSetDevice");
  check_cuda(cudaMemcpy(image.data(), base_, image.size(), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
  return image;
#else
  no_cuda();
#endif
}

void GuardedBuffer::write_image(const std::vector<std::uint8_t>& image) {
  if (image.size() != image_bytes()) {
    throw std::invalid_argument("GuardedBuffer::write_image: image has " + std::to_string(image.size()) +
                                " bytes, the buffer " + std::to_string(image_bytes()));
  }
  if (device_.kind == DeviceKind::kCPU) {
    std::memcpy(base_, image.data(), image.size());
    return;
  }
#if ATTNKIT_ENABLE_CUDA
  check_cuda(cudaSetDevice(device_.index), "cudaSetDevice");
  check_cuda(cudaMemcpy(base_, image.data(), image.size(), cudaMemcpyHostToDevice), "cudaMemcpy to device");
#else
  no_cuda();
#endif
}

bool cuda_device_available(std::string* why_not) {
#if ATTNKIT_ENABLE_CUDA
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    if (why_not) *why_not = std::string("no usable CUDA device: cudaGetDeviceCount failed: ") + cudaGetErrorString(error);
    return false;
  }
  if (count == 0) {
    if (why_not) *why_not = "no CUDA device is visible";
    return false;
  }
  return true;
#else
  if (why_not) *why_not = "this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF)";
  return false;
#endif
}

std::string synchronize(Device device) {
  if (device.kind == DeviceKind::kCPU) return "";
#if ATTNKIT_ENABLE_CUDA
  if (cudaError_t error = cudaSetDevice(device.index); error != cudaSuccess) return cudaGetErrorString(error);
  if (cudaError_t error = cudaDeviceSynchronize(); error != cudaSuccess) return cudaGetErrorString(error);
  if (cudaError_t error = cudaGetLastError(); error != cudaSuccess) return cudaGetErrorString(error);
  return "";
#else
  return "this build has no CUDA";
#endif
}

}  // namespace attnkit::testing
