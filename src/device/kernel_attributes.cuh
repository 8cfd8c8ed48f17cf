// Host-side launch helper shared by every kernel family: the dynamic shared-memory opt-in, asked once
// per (kernel, device) instead of before every launch.
//
// Why: a kernel using more than 48 KiB of dynamic shared memory must raise its limit with
// cudaFuncSetAttribute, which applies to the current device's context and stays set. Calling it before
// every launch cost part of the ~8 us of kernel host time measured per small call on the H100
// (bench/python/NOTES.md); the value never changes for a given kernel, so one successful call per device
// is enough.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

namespace attnkit::device {

// Raises kKernel's dynamic shared-memory limit to `bytes` on the current device, unless an earlier call
// did so there. `bytes` must be the same on every call for one kernel (each call site passes the
// kernel's compile-time size). Devices 0-63 are remembered in a bit mask; a device ordinal past 63 is
// asked every time. Thread-safe: two threads may both set the attribute, which is harmless.
template <auto kKernel>
cudaError_t ensure_dynamic_shared_memory(int bytes) {
  static std::atomic<std::uint64_t> devices_done{0};
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  const std::uint64_t bit = device < 64 ? (std::uint64_t{1} << device) : 0;
  if (bit != 0 && (devices_done.load(std::memory_order_acquire) & bit) != 0) return cudaSuccess;
  error = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (error == cudaSuccess && bit != 0) devices_done.fetch_or(bit, std::memory_order_acq_rel);
  return error;
}

}  // namespace attnkit::device
