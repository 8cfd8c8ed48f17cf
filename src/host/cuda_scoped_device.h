// Makes a device current for a scope and restores the previous one, for the backends' launch code
// (CUDA builds only: it needs the CUDA runtime's declarations).
#pragma once

#include <cuda_runtime_api.h>

namespace attnkit::host {

class ScopedDevice {
 public:
  explicit ScopedDevice(int ordinal) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != ordinal) {
      status_ = cudaSetDevice(ordinal);
      switched_ = status_ == cudaSuccess && previous_ >= 0;
    }
  }
  ~ScopedDevice() {
    if (switched_) (void)cudaSetDevice(previous_);
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

  cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  bool switched_ = false;  // only a device this object changed is set back (no cudaSetDevice otherwise)
  cudaError_t status_ = cudaSuccess;
};

}  // namespace attnkit::host
