// Every tensor of one dense attention case, on the CPU or a CUDA device, in guarded buffers
// (guarded_buffer.h), with a host image of each buffer that the float64 reference reads.
//
// Contents: q, k, v and dout hold fresh random values drawn from a normal distribution, rounded to the
// case's dtype, never zero; sinks are uniform in [-2, 3]; each tensor's stream is derived from
// (seed, case name, tensor), so a seed reproduces a case exactly. Every byte that is not a logical
// element (guards, stride gaps) holds the guard pattern, which is NaN: an input read out of bounds
// poisons the result, and an output written out of bounds changes a byte that check_untouched() sees.
// Outputs are poisoned with quiet NaN before each run.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "reference/dense_reference.h"
#include "tests/cases/dense_cases.h"
#include "tests/cpp/support/guarded_buffer.h"

namespace attnkit::testing {

enum class DenseTensor : int {
  kQ, kK, kV, kOut, kLse, kSinks, kCuSeqlensQ, kCuSeqlensK, kDout, kDq, kDk, kDv, kDsinks,
};
constexpr int kDenseTensorCount = 13;
const char* dense_tensor_name(DenseTensor tensor);

class DenseCaseTensors {
 public:
  // Allocates and fills every tensor of `dense_case` on `device`. Throws std::runtime_error when memory
  // cannot be allocated and std::invalid_argument for a case its layout cannot describe (packed QKV
  // with Sq != Sk or D != Dv).
  DenseCaseTensors(const cases::DenseCase& dense_case, Device device, std::uint64_t seed);

  const cases::DenseCase& dense_case() const { return case_; }
  Device device() const { return device_; }

  // sinks and dsinks exist only for cases with sinks, cu_seqlens only for varlen; the rest always.
  bool has(DenseTensor tensor) const;
  TensorRef device_view(DenseTensor tensor) const;  // an undefined TensorRef when absent
  TensorRef host_view(DenseTensor tensor) const;    // the same strides, over the host image
  std::vector<std::int64_t> shape(DenseTensor tensor) const;

  // API arguments over the device views, with the case's options and `backend`; no workspace.
  DenseForwardArgs forward_args(Backend backend, bool with_lse) const;
  DenseBackwardArgs backward_args(Backend backend, bool deterministic) const;
  reference::DenseReferenceInputs reference_inputs() const;  // host views of q, k, v, sinks, cu_seqlens

  // Rounds `values` (row-major over shape(tensor)) to the tensor's dtype, writes them into its logical
  // elements and uploads the buffer.
  void write_values(DenseTensor tensor, const std::vector<double>& values);
  // Downloads the tensor's buffer and returns its logical elements in row-major order.
  std::vector<double> read_values(DenseTensor tensor) const;

  // Quiet NaN into the logical elements of `outputs`, then upload.
  void poison(const std::vector<DenseTensor>& outputs);
  // After a run: compares every buffer with its host image, except the logical elements of `writable`.
  // Returns "" when nothing else changed, otherwise one line per changed buffer (which bytes, where).
  // Then the host images take the downloaded contents, so a later check reports only later changes.
  std::string check_untouched(const std::vector<DenseTensor>& writable);

 private:
  struct Buffer {
    std::string name;
    std::unique_ptr<GuardedBuffer> memory;
    std::vector<std::uint8_t> image;  // guard + payload + guard, as the device should hold it
  };
  struct Slot {
    bool present = false;
    int buffer = -1;
    std::int64_t offset = 0;  // elements from the start of the payload
    DType dtype = DType::kFloat32;
    int rank = 0;
    std::int64_t shape[TensorRef::kMaxRank] = {0, 0, 0, 0};
    std::int64_t strides[TensorRef::kMaxRank] = {0, 0, 0, 0};
  };

  const Slot& slot(DenseTensor tensor) const { return slots_[static_cast<int>(tensor)]; }
  int add_buffer(const std::string& name, std::size_t payload_bytes);
  void place(DenseTensor tensor, int buffer, std::int64_t offset, DType dtype, const std::vector<std::int64_t>& shape,
             const std::vector<std::int64_t>& strides);
  void place_own(DenseTensor tensor, DType dtype, const std::vector<std::int64_t>& shape, bool padded);
  std::vector<std::int64_t> element_offsets(const Slot& s) const;  // row-major logical order
  void upload(int buffer);
  void fill_random(DenseTensor tensor, std::uint64_t seed);

  cases::DenseCase case_;
  Device device_;
  std::vector<Buffer> buffers_;
  std::array<Slot, kDenseTensorCount> slots_;
  std::vector<std::int32_t> cu_seqlens_q_, cu_seqlens_k_;
};

}  // namespace attnkit::testing
