#pragma once
// Structural checks of one tensor (layout, dtype, device, shape) and of output aliasing, shared by
// make_dense_problem and make_linear_problem. Each returns kInvalidArgument with a message naming the
// tensor; messages are built only on failure, so the success path allocates nothing.

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "attnkit/types.h"

namespace attnkit::host {

Status invalid(const std::string& message);

// "[2, 3, 4]"
std::string shape_string(const std::int64_t* shape, std::size_t rank);
std::string shape_string(const TensorRef& t);

// Rank, non-negative extents and strides, the highest byte offset within int64 (the 64-bit offset
// rule: a product of sizes may pass 2^31, never 2^63), last dimension contiguous, pointer non-null when
// there is something to address, and aligned to the element size.
Status check_layout(const char* name, const TensorRef& t, int expected_rank);

// The first `rank` extents of t equal `expected`.
bool shape_matches(const TensorRef& t, const std::int64_t* expected, std::size_t rank);
Status shape_mismatch(const char* name, const TensorRef& t, const std::int64_t* expected, std::size_t rank,
                      const std::string& meaning);
Status check_shape(const char* name, const TensorRef& t, std::initializer_list<std::int64_t> expected,
                   const char* meaning);

Status check_dtype(const char* name, const TensorRef& t, DType expected, const char* why);

// All tensors of a call live on the device of q.
Status check_device(const char* name, const TensorRef& t, Device expected);

struct NamedTensor {
  const char* name;
  const TensorRef* tensor;
};

// Outputs must not share a byte with any input or with each other.
Status check_no_alias(const NamedTensor* outputs, std::size_t output_count, const NamedTensor* inputs,
                      std::size_t input_count);

inline Status check_no_alias(std::initializer_list<NamedTensor> outputs, std::initializer_list<NamedTensor> inputs) {
  return check_no_alias(outputs.begin(), outputs.size(), inputs.begin(), inputs.size());
}

inline Status check_no_alias(std::initializer_list<NamedTensor> outputs, const std::vector<NamedTensor>& inputs) {
  return check_no_alias(outputs.begin(), outputs.size(), inputs.data(), inputs.size());
}

}  // namespace attnkit::host
