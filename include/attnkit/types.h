// attnkit public types: DType, Device, TensorRef, Status.
// Framework-free: no CUDA, CuTe, CUTLASS or torch type appears in any public header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

namespace attnkit {

enum class DType : std::uint8_t {
  kFloat32,
  kFloat16,
  kBFloat16,
  kInt32,
  kFloat64,
};

const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

enum class DeviceKind : std::uint8_t { kCPU, kCUDA };

struct Device {
  DeviceKind kind = DeviceKind::kCPU;
  int index = 0;  // CUDA ordinal; 0 for the CPU

  static Device cpu() { return {DeviceKind::kCPU, 0}; }
  static Device cuda(int ordinal = 0) { return {DeviceKind::kCUDA, ordinal}; }
  friend bool operator==(const Device&, const Device&) = default;
};

std::string device_name(Device device);

// A non-owning view of a strided tensor. Strides are in elements, not bytes.
// An undefined TensorRef (data == nullptr and rank == 0) stands for an absent optional tensor.
struct TensorRef {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int rank = 0;
  std::int64_t shape[kMaxRank] = {0, 0, 0, 0};
  std::int64_t strides[kMaxRank] = {0, 0, 0, 0};
  Device device = Device::cpu();

  // A view with row-major (contiguous) strides.
  static TensorRef contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                              Device device = Device::cpu());
  // A view with explicit strides (in elements).
  static TensorRef strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                           std::initializer_list<std::int64_t> strides, Device device = Device::cpu());

  bool defined() const { return data != nullptr || rank != 0; }
  std::int64_t numel() const;
  // Bytes from the first to one past the last addressable element (0 for empty tensors).
  std::int64_t span_bytes() const;
  std::string describe() const;  // e.g. "bf16[2, 1024, 16, 128] on cuda:0"
};

enum class StatusCode : std::uint8_t {
  kOk,
  kInvalidArgument,     // the caller passed something wrong
  kNotImplemented,      // valid, but no backend supports it (message lists every reason)
  kNotCompiled,         // supported, but switched off in this build (message names the option)
  kWorkspaceTooSmall,   // message says how many bytes are needed
  kCudaError,           // a CUDA call failed
  kInternal,
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Convenience layer: the typed exception thrown by `check(status)`.
class Error : public std::exception {
 public:
  explicit Error(Status status) : status_(std::move(status)), what_(status_.to_string()) {}
  const Status& status() const { return status_; }
  StatusCode code() const { return status_.code(); }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Status status_;
  std::string what_;
};

// Throws attnkit::Error when `status` is not ok.
void check(const Status& status);

}  // namespace attnkit
