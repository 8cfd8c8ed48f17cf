#include <algorithm>
#include <sstream>

#include "attnkit/types.h"

namespace attnkit {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "fp32";
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    case DType::kInt32: return "int32";
    case DType::kFloat64: return "fp64";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kInt32: return 4;
    case DType::kFloat64: return 8;
  }
  return 0;
}

std::string device_name(Device device) {
  return device.kind == DeviceKind::kCPU ? std::string("cpu") : "cuda:" + std::to_string(device.index);
}

namespace {
TensorRef make_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape, Device device) {
  TensorRef ref;
  ref.data = data;
  ref.dtype = dtype;
  ref.device = device;
  ref.rank = static_cast<int>(shape.size());
  if (ref.rank > TensorRef::kMaxRank) ref.rank = TensorRef::kMaxRank + 1;  // flagged by validation
  int axis = 0;
  for (std::int64_t extent : shape) {
    if (axis < TensorRef::kMaxRank) ref.shape[axis] = extent;
    ++axis;
  }
  return ref;
}
}  // namespace

TensorRef TensorRef::contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                                Device device) {
  TensorRef ref = make_view(data, dtype, shape, device);
  std::int64_t stride = 1;
  for (int axis = std::min(ref.rank, kMaxRank) - 1; axis >= 0; --axis) {
    ref.strides[axis] = stride;
    stride *= ref.shape[axis] > 0 ? ref.shape[axis] : 1;
  }
  return ref;
}

TensorRef TensorRef::strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                             std::initializer_list<std::int64_t> strides, Device device) {
  TensorRef ref = make_view(data, dtype, shape, device);
  int axis = 0;
  for (std::int64_t stride : strides) {
    if (axis < kMaxRank) ref.strides[axis] = stride;
    ++axis;
  }
  if (axis != static_cast<int>(shape.size())) ref.rank = kMaxRank + 1;  // flagged by validation
  return ref;
}

std::int64_t TensorRef::numel() const {
  std::int64_t count = 1;
  for (int axis = 0; axis < rank && axis < kMaxRank; ++axis) count *= shape[axis];
  return count;
}

std::int64_t TensorRef::span_bytes() const {
  if (numel() == 0) return 0;
  std::int64_t last = 0;
  for (int axis = 0; axis < rank && axis < kMaxRank; ++axis) last += (shape[axis] - 1) * strides[axis];
  return (last + 1) * static_cast<std::int64_t>(dtype_size(dtype));
}

std::string TensorRef::describe() const {
  std::ostringstream out;
  out << dtype_name(dtype) << "[";
  for (int axis = 0; axis < rank && axis < kMaxRank; ++axis) out << (axis ? ", " : "") << shape[axis];
  out << "] on " << device_name(device);
  return out.str();
}

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kNotImplemented: return "not implemented";
    case StatusCode::kNotCompiled: return "not compiled";
    case StatusCode::kWorkspaceTooSmall: return "workspace too small";
    case StatusCode::kCudaError: return "CUDA error";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

void check(const Status& status) {
  if (!status.is_ok()) throw Error(status);
}

}  // namespace attnkit
