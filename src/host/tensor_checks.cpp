#include "host/tensor_checks.h"

#include <algorithm>
#include <cstdint>
#include <string>

namespace attnkit::host {
namespace {

bool overlaps(const TensorRef& a, const TensorRef& b) {
  if (!a.defined() || !b.defined() || a.device != b.device) return false;
  const auto a_begin = reinterpret_cast<std::uintptr_t>(a.data);
  const auto b_begin = reinterpret_cast<std::uintptr_t>(b.data);
  const auto a_span = static_cast<std::uintptr_t>(a.span_bytes());
  const auto b_span = static_cast<std::uintptr_t>(b.span_bytes());
  if (a_span == 0 || b_span == 0) return false;
  return a_begin < b_begin + b_span && b_begin < a_begin + a_span;
}

}  // namespace

Status invalid(const std::string& message) { return {StatusCode::kInvalidArgument, message}; }

std::string shape_string(const std::int64_t* shape, std::size_t rank) {
  std::string text = "[";
  for (std::size_t i = 0; i < rank; ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

std::string shape_string(const TensorRef& t) {
  return shape_string(t.shape, static_cast<std::size_t>(std::clamp(t.rank, 0, TensorRef::kMaxRank)));
}

Status check_layout(const char* name, const TensorRef& t, int expected_rank) {
  if (!t.defined()) return invalid(std::string(name) + " is required but was not given");
  if (t.rank != expected_rank) {
    return invalid(std::string(name) + ": expected rank " + std::to_string(expected_rank) + ", got rank " +
                   std::to_string(t.rank));
  }
  for (int axis = 0; axis < t.rank; ++axis) {
    if (t.shape[axis] < 0) return invalid(std::string(name) + ": negative extent in shape " + shape_string(t));
    if (t.strides[axis] < 0) {
      return invalid(std::string(name) + ": negative stride " + std::to_string(t.strides[axis]) + " on axis " +
                     std::to_string(axis));
    }
  }
  const bool empty = t.numel() == 0;
  std::int64_t last_offset = 0;
  for (int axis = 0; axis < t.rank && !empty; ++axis) {
    std::int64_t term = 0;
    if (__builtin_mul_overflow(t.shape[axis] - 1, t.strides[axis], &term) ||
        __builtin_add_overflow(last_offset, term, &last_offset)) {
      return invalid(std::string(name) + ": index overflow, shape " + shape_string(t) +
                     " with its strides addresses past 2^63 elements");
    }
  }
  std::int64_t bytes = 0;
  if (__builtin_mul_overflow(last_offset + 1, static_cast<std::int64_t>(dtype_size(t.dtype)), &bytes)) {
    return invalid(std::string(name) + ": index overflow, its byte span passes 2^63");
  }
  const std::int64_t last_extent = t.shape[t.rank - 1];
  if (last_extent > 1 && t.strides[t.rank - 1] != 1) {
    return invalid(std::string(name) + ": the last dimension must be contiguous (stride 1), got stride " +
                   std::to_string(t.strides[t.rank - 1]));
  }
  if (!empty && t.data == nullptr) return invalid(std::string(name) + ": null data pointer for " + t.describe());
  if (reinterpret_cast<std::uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
    return invalid(std::string(name) + ": data pointer is not aligned to its element size (" +
                   std::to_string(dtype_size(t.dtype)) + " bytes)");
  }
  return Status::ok();
}

bool shape_matches(const TensorRef& t, const std::int64_t* expected, std::size_t rank) {
  for (std::size_t axis = 0; axis < rank; ++axis) {
    if (t.shape[axis] != expected[axis]) return false;
  }
  return true;
}

Status shape_mismatch(const char* name, const TensorRef& t, const std::int64_t* expected, std::size_t rank,
                      const std::string& meaning) {
  return invalid(std::string(name) + ": expected shape " + shape_string(expected, rank) + " " + meaning + ", got " +
                 shape_string(t));
}

Status check_shape(const char* name, const TensorRef& t, std::initializer_list<std::int64_t> expected,
                   const char* meaning) {
  if (shape_matches(t, expected.begin(), expected.size())) return Status::ok();
  return shape_mismatch(name, t, expected.begin(), expected.size(), meaning);
}

Status check_dtype(const char* name, const TensorRef& t, DType expected, const char* why) {
  if (t.dtype != expected) {
    return invalid(std::string(name) + ": expected dtype " + dtype_name(expected) + " (" + why + "), got " +
                   dtype_name(t.dtype));
  }
  return Status::ok();
}

Status check_device(const char* name, const TensorRef& t, Device expected) {
  if (t.device != expected) {
    return invalid(std::string(name) + ": is on " + device_name(t.device) + " but q is on " +
                   device_name(expected) + "; all tensors of a call must be on one device");
  }
  return Status::ok();
}

Status check_no_alias(const NamedTensor* outputs, std::size_t output_count, const NamedTensor* inputs,
                      std::size_t input_count) {
  for (std::size_t i = 0; i < output_count; ++i) {
    for (std::size_t j = 0; j < input_count; ++j) {
      if (overlaps(*outputs[i].tensor, *inputs[j].tensor)) {
        return invalid(std::string("output ") + outputs[i].name + " overlaps input " + inputs[j].name +
                       " in memory; outputs must not alias inputs");
      }
    }
    for (std::size_t j = i + 1; j < output_count; ++j) {
      if (overlaps(*outputs[i].tensor, *outputs[j].tensor)) {
        return invalid(std::string("outputs ") + outputs[i].name + " and " + outputs[j].name + " overlap in memory");
      }
    }
  }
  return Status::ok();
}

}  // namespace attnkit::host
