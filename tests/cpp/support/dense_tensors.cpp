#include "tests/cpp/support/dense_tensors.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <stdexcept>

#include "attnkit/numeric.h"
#include "tests/cases/splitmix64.h"

namespace attnkit::testing {

const char* dense_tensor_name(DenseTensor tensor) {
  switch (tensor) {
    case DenseTensor::kQ: return "q";
    case DenseTensor::kK: return "k";
    case DenseTensor::kV: return "v";
    case DenseTensor::kOut: return "out";
    case DenseTensor::kLse: return "lse";
    case DenseTensor::kSinks: return "sinks";
    case DenseTensor::kCuSeqlensQ: return "cu_seqlens_q";
    case DenseTensor::kCuSeqlensK: return "cu_seqlens_k";
    case DenseTensor::kDout: return "dout";
    case DenseTensor::kDq: return "dq";
    case DenseTensor::kDk: return "dk";
    case DenseTensor::kDv: return "dv";
    case DenseTensor::kDsinks: return "dsinks";
  }
  return "unknown";
}

namespace {

// The gap, in elements, that kPadded puts after every row of every axis but the last. 8 keeps every
// stride of a [.., D] tensor a multiple of 8 elements (16 bytes in fp16/bf16), the alignment GPU kernels
// may assume for vector loads, since D is a multiple of 8.
constexpr std::int64_t kPadElements = 8;

std::vector<std::int64_t> contiguous_strides(const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> strides(shape.size(), 1);
  for (std::size_t axis = shape.size(); axis-- > 1;) strides[axis - 1] = strides[axis] * std::max<std::int64_t>(shape[axis], 1);
  return strides;
}

std::vector<std::int64_t> padded_strides(const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> strides(shape.size(), 1);
  for (std::size_t axis = shape.size(); axis-- > 1;) strides[axis - 1] = strides[axis] * shape[axis] + kPadElements;
  return strides;
}

// Elements from the first to one past the last addressable one (0 when empty).
std::int64_t span_elements(const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides) {
  std::int64_t last = 0;
  for (std::size_t axis = 0; axis < shape.size(); ++axis) {
    if (shape[axis] == 0) return 0;
    last += (shape[axis] - 1) * strides[axis];
  }
  return last + 1;
}

void store(DType dtype, double value, std::uint8_t* where) {
  switch (dtype) {
    case DType::kFloat64: std::memcpy(where, &value, 8); return;
    case DType::kFloat32: {
      const float f = static_cast<float>(value);
      std::memcpy(where, &f, 4);
      return;
    }
    case DType::kFloat16: {
      const std::uint16_t bits = float_to_fp16(static_cast<float>(value));
      std::memcpy(where, &bits, 2);
      return;
    }
    case DType::kBFloat16: {
      const std::uint16_t bits = float_to_bf16(static_cast<float>(value));
      std::memcpy(where, &bits, 2);
      return;
    }
    case DType::kInt32: {
      const auto i = static_cast<std::int32_t>(value);
      std::memcpy(where, &i, 4);
      return;
    }
  }
}

double fetch(DType dtype, const std::uint8_t* where) {
  switch (dtype) {
    case DType::kFloat64: {
      double d;
      std::memcpy(&d, where, 8);
      return d;
    }
    case DType::kFloat32: {
      float f;
      std::memcpy(&f, where, 4);
      return f;
    }
    case DType::kFloat16: {
      std::uint16_t bits;
      std::memcpy(&bits, where, 2);
      return fp16_to_float(bits);
    }
    case DType::kBFloat16: {
      std::uint16_t bits;
      std::memcpy(&bits, where, 2);
      return bf16_to_float(bits);
    }
    case DType::kInt32: {
      std::int32_t i;
      std::memcpy(&i, where, 4);
      return i;
    }
  }
  return 0.0;
}

// A quiet NaN of the dtype, the value a kernel would produce from NaN arithmetic.
void store_quiet_nan(DType dtype, std::uint8_t* where) {
  switch (dtype) {
    case DType::kFloat16: {
      const std::uint16_t bits = 0x7e00;
      std::memcpy(where, &bits, 2);
      return;
    }
    case DType::kBFloat16: {
      const std::uint16_t bits = 0x7fc0;
      std::memcpy(where, &bits, 2);
      return;
    }
    default: store(dtype, std::nan(""), where); return;
  }
}

double rounded_to(DType dtype, double value) {
  std::uint8_t bytes[8];
  store(dtype, value, bytes);
  return fetch(dtype, bytes);
}

std::string where_in_buffer(std::size_t image_offset, std::size_t payload_bytes) {
  const std::size_t guard = GuardedBuffer::kGuardBytes;
  if (image_offset < guard) return "left guard band, " + std::to_string(guard - image_offset) + " bytes before the payload";
  if (image_offset >= guard + payload_bytes) {
    return "right guard band, " + std::to_string(image_offset - guard - payload_bytes) + " bytes after the payload";
  }
  return "payload byte " + std::to_string(image_offset - guard) + " (a stride gap, not a logical element)";
}

}  // namespace

int DenseCaseTensors::add_buffer(const std::string& name, std::size_t payload_bytes) {
  Buffer buffer;
  buffer.name = name;
  buffer.memory = std::make_unique<GuardedBuffer>(device_, payload_bytes);
  buffer.image.resize(buffer.memory->image_bytes());
  fill_guard_pattern(buffer.image.data(), buffer.image.size());
  buffers_.push_back(std::move(buffer));
  return static_cast<int>(buffers_.size()) - 1;
}

void DenseCaseTensors::place(DenseTensor tensor, int buffer, std::int64_t offset, DType dtype,
                             const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides) {
  Slot& s = slots_[static_cast<int>(tensor)];
  s.present = true;
  s.buffer = buffer;
  s.offset = offset;
  s.dtype = dtype;
  s.rank = static_cast<int>(shape.size());
  for (int axis = 0; axis < s.rank; ++axis) {
    s.shape[axis] = shape[static_cast<std::size_t>(axis)];
    s.strides[axis] = strides[static_cast<std::size_t>(axis)];
  }
}

void DenseCaseTensors::place_own(DenseTensor tensor, DType dtype, const std::vector<std::int64_t>& shape, bool padded) {
  const std::vector<std::int64_t> strides = padded ? padded_strides(shape) : contiguous_strides(shape);
  // A padded tensor also ends in a gap, so the guard is not the first thing after its last element.
  const std::int64_t elements = span_elements(shape, strides) + (padded ? kPadElements : 0);
  const int buffer = add_buffer(dense_tensor_name(tensor), static_cast<std::size_t>(elements) * dtype_size(dtype));
  place(tensor, buffer, 0, dtype, shape, strides);
}

DenseCaseTensors::DenseCaseTensors(const cases::DenseCase& dense_case, Device device, std::uint64_t seed)
    : case_(dense_case), device_(device) {
  const cases::DenseCase& c = case_;
  const bool varlen = c.varlen();
  if (varlen && c.varlen_q.size() != c.varlen_k.size()) {
    throw std::invalid_argument(c.name + ": varlen_q and varlen_k must have the same number of sequences");
  }
  const std::int64_t B = c.batch, Hq = c.heads_q, Hkv = c.heads_kv, D = c.head_dim, Dv = c.head_dim_v;
  const std::int64_t Tq = c.total_q(), Tk = c.total_k();
  auto token_shape = [&](std::int64_t rows_per_batch, std::int64_t total_rows, std::int64_t heads, std::int64_t dim) {
    return varlen ? std::vector<std::int64_t>{total_rows, heads, dim} : std::vector<std::int64_t>{B, rows_per_batch, heads, dim};
  };
  const std::vector<std::int64_t> q_shape = token_shape(c.seqlen_q, Tq, Hq, D);
  const std::vector<std::int64_t> k_shape = token_shape(c.seqlen_k, Tk, Hkv, D);
  const std::vector<std::int64_t> v_shape = token_shape(c.seqlen_k, Tk, Hkv, Dv);
  const std::vector<std::int64_t> o_shape = token_shape(c.seqlen_q, Tq, Hq, Dv);
  const std::vector<std::int64_t> lse_shape = varlen ? std::vector<std::int64_t>{Hq, Tq} : std::vector<std::int64_t>{B, Hq, c.seqlen_q};
  const bool padded = c.layout == cases::DenseLayout::kPadded;

  if (c.layout == cases::DenseLayout::kPackedQkv) {
    if (D != Dv || (varlen ? c.varlen_q != c.varlen_k : c.seqlen_q != c.seqlen_k)) {
      throw std::invalid_argument(c.name + ": packed QKV needs Sq = Sk (the same varlen lengths) and D = Dv");
    }
    // One [B, S, Hq + 2 Hkv, D] (varlen [T, Hq + 2 Hkv, D]) tensor; q, k, v are head ranges of it.
    const std::int64_t heads_total = Hq + 2 * Hkv;
    const std::vector<std::int64_t> packed_shape = token_shape(c.seqlen_q, Tq, heads_total, D);
    const std::vector<std::int64_t> strides = contiguous_strides(packed_shape);
    const std::int64_t elements = span_elements(packed_shape, strides);
    const int buffer = add_buffer("qkv", static_cast<std::size_t>(elements) * dtype_size(c.dtype));
    place(DenseTensor::kQ, buffer, 0, c.dtype, q_shape, strides);
    place(DenseTensor::kK, buffer, Hq * D, c.dtype, k_shape, strides);
    place(DenseTensor::kV, buffer, (Hq + Hkv) * D, c.dtype, v_shape, strides);
  } else {
    place_own(DenseTensor::kQ, c.dtype, q_shape, padded);
    place_own(DenseTensor::kK, c.dtype, k_shape, padded);
    place_own(DenseTensor::kV, c.dtype, v_shape, padded);
  }
  place_own(DenseTensor::kOut, c.dtype, o_shape, padded);
  place_own(DenseTensor::kLse, DType::kFloat32, lse_shape, padded);
  place_own(DenseTensor::kDout, c.dtype, o_shape, padded);
  place_own(DenseTensor::kDq, c.dtype, q_shape, padded);
  place_own(DenseTensor::kDk, c.dtype, k_shape, padded);
  place_own(DenseTensor::kDv, c.dtype, v_shape, padded);
  if (c.sinks) {
    place_own(DenseTensor::kSinks, DType::kFloat32, {Hq}, false);
    place_own(DenseTensor::kDsinks, DType::kFloat32, {Hq}, false);
  }
  if (varlen) {
    cu_seqlens_q_ = {0};
    cu_seqlens_k_ = {0};
    for (std::size_t n = 0; n < c.varlen_q.size(); ++n) {
      cu_seqlens_q_.push_back(cu_seqlens_q_.back() + c.varlen_q[n]);
      cu_seqlens_k_.push_back(cu_seqlens_k_.back() + c.varlen_k[n]);
    }
    const std::int64_t offsets = static_cast<std::int64_t>(cu_seqlens_q_.size());
    place_own(DenseTensor::kCuSeqlensQ, DType::kInt32, {offsets}, false);
    place_own(DenseTensor::kCuSeqlensK, DType::kInt32, {offsets}, false);
    write_values(DenseTensor::kCuSeqlensQ, std::vector<double>(cu_seqlens_q_.begin(), cu_seqlens_q_.end()));
    write_values(DenseTensor::kCuSeqlensK, std::vector<double>(cu_seqlens_k_.begin(), cu_seqlens_k_.end()));
  }

  const std::uint64_t case_seed = seed ^ cases::hash_name(c.name);
  for (DenseTensor tensor : {DenseTensor::kQ, DenseTensor::kK, DenseTensor::kV, DenseTensor::kDout, DenseTensor::kSinks}) {
    if (has(tensor)) fill_random(tensor, case_seed + 0x1000 * static_cast<std::uint64_t>(tensor));
  }
  poison({DenseTensor::kOut, DenseTensor::kLse, DenseTensor::kDq, DenseTensor::kDk, DenseTensor::kDv});
  if (has(DenseTensor::kDsinks)) poison({DenseTensor::kDsinks});
}

bool DenseCaseTensors::has(DenseTensor tensor) const { return slot(tensor).present; }

std::vector<std::int64_t> DenseCaseTensors::shape(DenseTensor tensor) const {
  const Slot& s = slot(tensor);
  return std::vector<std::int64_t>(s.shape, s.shape + s.rank);
}

TensorRef DenseCaseTensors::device_view(DenseTensor tensor) const {
  const Slot& s = slot(tensor);
  TensorRef ref;
  if (!s.present) return ref;
  ref.data = static_cast<std::uint8_t*>(buffers_[static_cast<std::size_t>(s.buffer)].memory->payload()) +
             s.offset * static_cast<std::int64_t>(dtype_size(s.dtype));
  ref.dtype = s.dtype;
  ref.rank = s.rank;
  for (int axis = 0; axis < s.rank; ++axis) {
    ref.shape[axis] = s.shape[axis];
    ref.strides[axis] = s.strides[axis];
  }
  ref.device = device_;
  return ref;
}

TensorRef DenseCaseTensors::host_view(DenseTensor tensor) const {
  TensorRef ref = device_view(tensor);
  if (!ref.defined()) return ref;
  const Slot& s = slot(tensor);
  const Buffer& buffer = buffers_[static_cast<std::size_t>(s.buffer)];
  ref.data = const_cast<std::uint8_t*>(buffer.image.data()) + GuardedBuffer::kGuardBytes +
             s.offset * static_cast<std::int64_t>(dtype_size(s.dtype));
  ref.device = Device::cpu();
  return ref;
}

DenseForwardArgs DenseCaseTensors::forward_args(Backend backend, bool with_lse) const {
  DenseForwardArgs args;
  args.q = device_view(DenseTensor::kQ);
  args.k = device_view(DenseTensor::kK);
  args.v = device_view(DenseTensor::kV);
  args.out = device_view(DenseTensor::kOut);
  if (with_lse) args.lse = device_view(DenseTensor::kLse);
  args.sinks = device_view(DenseTensor::kSinks);
  args.cu_seqlens_q = device_view(DenseTensor::kCuSeqlensQ);
  args.cu_seqlens_k = device_view(DenseTensor::kCuSeqlensK);
  if (case_.varlen()) {
    args.max_seqlen_q = case_.max_seqlen_q();
    args.max_seqlen_k = case_.max_seqlen_k();
  }
  if (case_.scale > 0.0f) args.options.scale = case_.scale;
  args.options.causal = case_.causal;
  args.options.window_left = case_.window_left;
  args.options.window_right = case_.window_right;
  args.options.softcap = case_.softcap;
  args.options.backend = backend;
  return args;
}

DenseBackwardArgs DenseCaseTensors::backward_args(Backend backend, bool deterministic) const {
  const DenseForwardArgs forward = forward_args(backend, true);
  DenseBackwardArgs args;
  args.q = forward.q;
  args.k = forward.k;
  args.v = forward.v;
  args.out = forward.out;
  args.dout = device_view(DenseTensor::kDout);
  args.lse = forward.lse;
  args.dq = device_view(DenseTensor::kDq);
  args.dk = device_view(DenseTensor::kDk);
  args.dv = device_view(DenseTensor::kDv);
  args.sinks = forward.sinks;
  args.dsinks = device_view(DenseTensor::kDsinks);
  args.cu_seqlens_q = forward.cu_seqlens_q;
  args.cu_seqlens_k = forward.cu_seqlens_k;
  args.max_seqlen_q = forward.max_seqlen_q;
  args.max_seqlen_k = forward.max_seqlen_k;
  args.deterministic = deterministic;
  args.options = forward.options;
  return args;
}

reference::DenseReferenceInputs DenseCaseTensors::reference_inputs() const {
  reference::DenseReferenceInputs inputs;
  inputs.q = host_view(DenseTensor::kQ);
  inputs.k = host_view(DenseTensor::kK);
  inputs.v = host_view(DenseTensor::kV);
  inputs.sinks = host_view(DenseTensor::kSinks);
  inputs.cu_seqlens_q = host_view(DenseTensor::kCuSeqlensQ);
  inputs.cu_seqlens_k = host_view(DenseTensor::kCuSeqlensK);
  inputs.options = forward_args(Backend::kAuto, true).options;
  return inputs;
}

std::vector<std::int64_t> DenseCaseTensors::element_offsets(const Slot& s) const {
  std::int64_t count = 1;
  for (int axis = 0; axis < s.rank; ++axis) count *= s.shape[axis];
  std::vector<std::int64_t> offsets;
  offsets.reserve(static_cast<std::size_t>(count));
  std::int64_t index[TensorRef::kMaxRank] = {0, 0, 0, 0};
  for (std::int64_t e = 0; e < count; ++e) {
    std::int64_t offset = s.offset;
    for (int axis = 0; axis < s.rank; ++axis) offset += index[axis] * s.strides[axis];
    offsets.push_back(offset);
    for (int axis = s.rank - 1; axis >= 0; --axis) {  // row-major increment
      if (++index[axis] < s.shape[axis]) break;
      index[axis] = 0;
    }
  }
  return offsets;
}

void DenseCaseTensors::upload(int buffer) {
  Buffer& b = buffers_[static_cast<std::size_t>(buffer)];
  b.memory->write_image(b.image);
}

void DenseCaseTensors::write_values(DenseTensor tensor, const std::vector<double>& values) {
  const Slot& s = slot(tensor);
  if (!s.present) throw std::invalid_argument(std::string("write_values: ") + dense_tensor_name(tensor) + " is absent");
  const std::vector<std::int64_t> offsets = element_offsets(s);
  if (offsets.size() != values.size()) {
    throw std::invalid_argument(std::string("write_values: ") + dense_tensor_name(tensor) + " has " +
                                std::to_string(offsets.size()) + " elements, got " + std::to_string(values.size()));
  }
  Buffer& b = buffers_[static_cast<std::size_t>(s.buffer)];
  const std::size_t size = dtype_size(s.dtype);
  for (std::size_t e = 0; e < offsets.size(); ++e) {
    store(s.dtype, values[e], b.image.data() + GuardedBuffer::kGuardBytes + static_cast<std::size_t>(offsets[e]) * size);
  }
  upload(s.buffer);
}

std::vector<double> DenseCaseTensors::read_values(DenseTensor tensor) const {
  const Slot& s = slot(tensor);
  if (!s.present) throw std::invalid_argument(std::string("read_values: ") + dense_tensor_name(tensor) + " is absent");
  const std::vector<std::uint8_t> image = buffers_[static_cast<std::size_t>(s.buffer)].memory->read_image();
  const std::vector<std::int64_t> offsets = element_offsets(s);
  const std::size_t size = dtype_size(s.dtype);
  std::vector<double> values(offsets.size());
  for (std::size_t e = 0; e < offsets.size(); ++e) {
    values[e] = fetch(s.dtype, image.data() + GuardedBuffer::kGuardBytes + static_cast<std::size_t>(offsets[e]) * size);
  }
  return values;
}

void DenseCaseTensors::fill_random(DenseTensor tensor, std::uint64_t seed) {
  const Slot& s = slot(tensor);
  cases::SplitMix64 rng(seed);
  const std::vector<std::int64_t> offsets = element_offsets(s);
  std::vector<double> values(offsets.size());
  for (double& value : values) {
    do {
      if (tensor == DenseTensor::kSinks) {
        value = -2.0 + 5.0 * rng.uniform01();
      } else {  // standard normal by Box-Muller; 1 - u is in (0, 1], so the log is finite
        const double radius = std::sqrt(-2.0 * std::log(1.0 - rng.uniform01()));
        value = radius * std::cos(2.0 * std::numbers::pi * rng.uniform01());
      }
      value = rounded_to(s.dtype, value);
    } while (value == 0.0);  // never zeros: a zero hides a wrong index or a missing term
  }
  write_values(tensor, values);
}

void DenseCaseTensors::poison(const std::vector<DenseTensor>& outputs) {
  std::vector<int> touched;
  for (DenseTensor tensor : outputs) {
    const Slot& s = slot(tensor);
    if (!s.present) continue;
    Buffer& b = buffers_[static_cast<std::size_t>(s.buffer)];
    const std::size_t size = dtype_size(s.dtype);
    for (std::int64_t offset : element_offsets(s)) {
      store_quiet_nan(s.dtype, b.image.data() + GuardedBuffer::kGuardBytes + static_cast<std::size_t>(offset) * size);
    }
    touched.push_back(s.buffer);
  }
  for (int buffer : touched) upload(buffer);
}

std::string DenseCaseTensors::check_untouched(const std::vector<DenseTensor>& writable) {
  std::string report;
  for (std::size_t index = 0; index < buffers_.size(); ++index) {
    Buffer& b = buffers_[index];
    std::vector<std::uint8_t> now = b.memory->read_image();
    std::vector<bool> may_change(now.size(), false);
    for (DenseTensor tensor : writable) {
      const Slot& s = slot(tensor);
      if (!s.present || s.buffer != static_cast<int>(index)) continue;
      const std::size_t size = dtype_size(s.dtype);
      for (std::int64_t offset : element_offsets(s)) {
        const std::size_t first = GuardedBuffer::kGuardBytes + static_cast<std::size_t>(offset) * size;
        for (std::size_t byte = 0; byte < size; ++byte) may_change[first + byte] = true;
      }
    }
    std::size_t changed = 0, first_changed = 0;
    for (std::size_t byte = 0; byte < now.size(); ++byte) {
      if (!may_change[byte] && now[byte] != b.image[byte]) {
        if (changed++ == 0) first_changed = byte;
      }
    }
    if (changed > 0) {
      report += "buffer '" + b.name + "': " + std::to_string(changed) +
                " bytes changed outside the elements the call may write; first in the " +
                where_in_buffer(first_changed, b.memory->payload_bytes()) + "\n";
    }
    std::memcpy(b.image.data(), now.data(), now.size());  // in place: host views into the image stay valid
  }
  return report;
}

}  // namespace attnkit::testing
