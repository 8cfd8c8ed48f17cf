#include "tests/cpp/linear_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numbers>
#include <numeric>
#include <stdexcept>

#include "attnkit/numeric.h"
#include "tests/cases/splitmix64.h"

namespace attnkit::testing {
namespace {

using cases::LinearCase;

// The gap, in elements, that a padded tensor has after every row of every axis but the last (as the
// dense tests' kPadded): 8 keeps 16-byte alignment of 16-bit rows.
constexpr std::int64_t kPadElements = 8;

constexpr const char* kTensorNames[kLinearTensorCount] = {
    "q",    "k",     "v",     "g",       "beta",          "A_log",        "dt_bias",         "out",
    "initial_state", "final_state", "cu_seqlens", "dout", "dfinal_state", "dq", "dk", "dv",
    "dg",   "dbeta", "d_initial_state", "dA_log", "ddt_bias", "state", "state_indices"};

double normal(cases::SplitMix64& rng) {
  // Box-Muller; 1 - u keeps the logarithm finite.
  const double u = 1.0 - rng.uniform01(), w = rng.uniform01();
  return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * std::numbers::pi * w);
}

double round_to_dtype(DType dtype, double x) {
  switch (dtype) {
    case DType::kBFloat16: return bf16_to_float(float_to_bf16(static_cast<float>(x)));
    case DType::kFloat16: return fp16_to_float(float_to_fp16(static_cast<float>(x)));
    case DType::kFloat32: return static_cast<float>(x);
    default: return x;
  }
}

void store_element(std::uint8_t* payload, DType dtype, std::int64_t offset, double value) {
  switch (dtype) {
    case DType::kFloat32: {
      const float f = static_cast<float>(value);
      std::memcpy(payload + offset * 4, &f, 4);
      return;
    }
    case DType::kBFloat16: {
      const std::uint16_t bits = float_to_bf16(static_cast<float>(value));
      std::memcpy(payload + offset * 2, &bits, 2);
      return;
    }
    case DType::kFloat16: {
      const std::uint16_t bits = float_to_fp16(static_cast<float>(value));
      std::memcpy(payload + offset * 2, &bits, 2);
      return;
    }
    case DType::kInt32: {
      const auto i = static_cast<std::int32_t>(value);
      std::memcpy(payload + offset * 4, &i, 4);
      return;
    }
    case DType::kFloat64: std::memcpy(payload + offset * 8, &value, 8); return;
  }
}

double load_element(const std::uint8_t* payload, DType dtype, std::int64_t offset) {
  switch (dtype) {
    case DType::kFloat32: {
      float f;
      std::memcpy(&f, payload + offset * 4, 4);
      return f;
    }
    case DType::kBFloat16: {
      std::uint16_t bits;
      std::memcpy(&bits, payload + offset * 2, 2);
      return bf16_to_float(bits);
    }
    case DType::kFloat16: {
      std::uint16_t bits;
      std::memcpy(&bits, payload + offset * 2, 2);
      return fp16_to_float(bits);
    }
    case DType::kInt32: {
      std::int32_t i;
      std::memcpy(&i, payload + offset * 4, 4);
      return i;
    }
    case DType::kFloat64: {
      double d;
      std::memcpy(&d, payload + offset * 8, 8);
      return d;
    }
  }
  return 0.0;
}

TensorRef view_over(void* data, DType dtype, const std::vector<std::int64_t>& shape,
                    const std::vector<std::int64_t>& strides, Device device) {
  TensorRef t;
  t.data = data;
  t.dtype = dtype;
  t.rank = static_cast<int>(shape.size());
  for (int axis = 0; axis < t.rank; ++axis) {
    t.shape[axis] = shape[axis];
    t.strides[axis] = strides[axis];
  }
  t.device = device;
  return t;
}

bool is_gradient_of_gate_or_beta(LinearTensor t) {
  return t == LinearTensor::kDg || t == LinearTensor::kDbeta || t == LinearTensor::kDALog || t == LinearTensor::kDdtBias;
}

}  // namespace

const char* linear_tensor_name(LinearTensor tensor) { return kTensorNames[static_cast<int>(tensor)]; }

bool linear_expects_no_work(const LinearCase& c, LinearCall call) {
  const std::int64_t tokens = c.tensor_batch() * c.tensor_seqlen();
  const bool parameter_gradients = call == LinearCall::kBackward && c.gate_form != LinearGateForm::kLogDecay;
  if (c.heads_v == 0) return true;
  if (c.num_sequences() == 0) return !parameter_gradients;
  switch (call) {
    case LinearCall::kForward: return tokens == 0 && !c.final_state;
    case LinearCall::kBackward: return tokens == 0 && !c.initial_state && !parameter_gradients;
    case LinearCall::kDecode: return tokens == 0;
  }
  return false;
}

LinearCaseTensors::LinearCaseTensors(const LinearCase& c, LinearCall call, Device device, std::uint64_t seed)
    : case_(c), call_(call), device_(device) {
  const bool decode = call == LinearCall::kDecode, backward = call == LinearCall::kBackward;
  const std::int64_t B = decode ? c.batch : c.tensor_batch(), T = decode ? c.seqlen : c.tensor_seqlen();
  const std::int64_t N = decode ? c.batch : c.num_sequences();
  const std::int64_t H = c.heads_qk, HV = c.heads_v, K = c.key_dim, V = c.value_dim;
  const bool kda = c.variant == LinearVariant::kKimiDelta;
  const bool fused = c.gate_form != LinearGateForm::kLogDecay;
  const std::vector<std::int64_t> qk_shape{B, T, H, K}, v_shape{B, T, HV, V}, beta_shape{B, T, HV};
  const std::vector<std::int64_t> g_shape = kda ? std::vector<std::int64_t>{B, T, HV, K} : beta_shape;
  const std::vector<std::int64_t> bias_shape = kda ? std::vector<std::int64_t>{HV, K} : std::vector<std::int64_t>{HV};
  auto state_shape = [&](std::int64_t count) {
    return c.state_layout == LinearStateLayout::kKV ? std::vector<std::int64_t>{count, HV, K, V}
                                                    : std::vector<std::int64_t>{count, HV, V, K};
  };
  auto stream = [&](LinearTensor t) {
    return cases::SplitMix64(seed ^ cases::hash_name(c.name) ^ (cases::hash_name(linear_tensor_name(t)) * 3));
  };
  auto numel = [](const std::vector<std::int64_t>& shape) {
    return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
  };
  auto normal_values = [&](LinearTensor t, const std::vector<std::int64_t>& shape, double sigma) {
    cases::SplitMix64 rng = stream(t);
    std::vector<double> values(static_cast<std::size_t>(numel(shape)));
    for (double& value : values) value = sigma * normal(rng);
    return values;
  };
  auto uniform_values = [&](LinearTensor t, const std::vector<std::int64_t>& shape, double low, double high) {
    cases::SplitMix64 rng = stream(t);
    std::vector<double> values(static_cast<std::size_t>(numel(shape)));
    for (double& value : values) value = low + (high - low) * rng.uniform01();
    return values;
  };

  create(LinearTensor::kQ, c.dtype, qk_shape, c.padded);
  fill(LinearTensor::kQ, normal_values(LinearTensor::kQ, qk_shape, 1.0));
  create(LinearTensor::kK, c.dtype, qk_shape, c.padded);
  std::vector<double> keys = normal_values(LinearTensor::kK, qk_shape, 1.0);
  if (!c.l2norm_qk) {
    for (std::size_t row = 0; K > 0 && row < keys.size() / K; ++row) {
      double sum_sq = 0.0;
      for (std::int64_t d = 0; d < K; ++d) sum_sq += keys[row * K + d] * keys[row * K + d];
      for (std::int64_t d = 0; d < K; ++d) keys[row * K + d] /= std::sqrt(sum_sq);
    }
  }
  fill(LinearTensor::kK, keys);
  create(LinearTensor::kV, c.dtype, v_shape, c.padded);
  fill(LinearTensor::kV, normal_values(LinearTensor::kV, v_shape, 1.0));
  create(LinearTensor::kG, c.gate_dtype, g_shape, c.padded);
  if (fused) {
    fill(LinearTensor::kG, normal_values(LinearTensor::kG, g_shape, 1.0));
    create(LinearTensor::kALog, DType::kFloat32, {HV}, false);
    std::vector<double> a_log = uniform_values(LinearTensor::kALog, {HV}, 0.2, 1.0);
    for (double& a : a_log) a = std::log(c.gate_scale * a);
    fill(LinearTensor::kALog, a_log);
    if (c.dt_bias) {
      create(LinearTensor::kDtBias, DType::kFloat32, bias_shape, false);
      fill(LinearTensor::kDtBias, normal_values(LinearTensor::kDtBias, bias_shape, 0.5));
    }
  } else {
    fill(LinearTensor::kG, uniform_values(LinearTensor::kG, g_shape, -c.gate_scale, -0.02 * c.gate_scale));
  }
  create(LinearTensor::kBeta, c.beta_dtype, beta_shape, c.padded);
  fill(LinearTensor::kBeta, c.beta_form == LinearBetaForm::kValue
                                ? uniform_values(LinearTensor::kBeta, beta_shape, 0.05, 1.0)
                                : normal_values(LinearTensor::kBeta, beta_shape, 1.5));
  if (c.is_varlen() && !decode) {
    create(LinearTensor::kCuSeqlens, DType::kInt32, {N + 1}, false);
    std::vector<double> offsets{0.0};
    for (std::int32_t length : c.varlen) offsets.push_back(offsets.back() + length);
    fill(LinearTensor::kCuSeqlens, offsets);
  }
  if (decode) {
    const std::int64_t pool = c.state_pool > 0 ? c.state_pool : N;
    create(LinearTensor::kState, DType::kFloat32, state_shape(pool), false);
    fill(LinearTensor::kState, normal_values(LinearTensor::kState, state_shape(pool), 1.0));
    if (c.state_pool > 0) {
      cases::SplitMix64 rng = stream(LinearTensor::kStateIndices);
      std::vector<double> slots(static_cast<std::size_t>(pool));
      std::iota(slots.begin(), slots.end(), 0.0);
      for (std::int64_t i = pool - 1; i > 0; --i) std::swap(slots[i], slots[rng.uniform(0, i)]);
      slots.resize(static_cast<std::size_t>(N), -1.0);
      if (c.padding_slots) {
        for (std::int64_t n = 1; n < N; n += 3) slots[n] = -1.0;
      }
      create(LinearTensor::kStateIndices, DType::kInt32, {N}, false);
      fill(LinearTensor::kStateIndices, slots);
    }
    create(LinearTensor::kOut, c.dtype, v_shape, c.padded);
    return;
  }
  if (c.initial_state) {
    create(LinearTensor::kInitialState, DType::kFloat32, state_shape(N), false);
    fill(LinearTensor::kInitialState, normal_values(LinearTensor::kInitialState, state_shape(N), 1.0));
  }
  if (!backward) {
    create(LinearTensor::kOut, c.dtype, v_shape, c.padded);
    if (c.final_state) create(LinearTensor::kFinalState, DType::kFloat32, state_shape(N), false);
    return;
  }
  create(LinearTensor::kDout, c.dtype, v_shape, c.padded);
  fill(LinearTensor::kDout, normal_values(LinearTensor::kDout, v_shape, 1.0));
  if (c.dfinal_state) {
    create(LinearTensor::kDfinalState, DType::kFloat32, state_shape(N), false);
    fill(LinearTensor::kDfinalState, normal_values(LinearTensor::kDfinalState, state_shape(N), 1.0));
  }
  create(LinearTensor::kDq, c.dtype, qk_shape, c.padded);
  create(LinearTensor::kDk, c.dtype, qk_shape, c.padded);
  create(LinearTensor::kDv, c.dtype, v_shape, c.padded);
  create(LinearTensor::kDg, c.gate_dtype, g_shape, c.padded);
  create(LinearTensor::kDbeta, c.beta_dtype, beta_shape, c.padded);
  if (c.initial_state) create(LinearTensor::kDInitialState, DType::kFloat32, state_shape(N), false);
  if (fused) create(LinearTensor::kDALog, DType::kFloat32, {HV}, false);
  if (fused && c.dt_bias) create(LinearTensor::kDdtBias, DType::kFloat32, bias_shape, false);
}

void LinearCaseTensors::create(LinearTensor tensor, DType dtype, const std::vector<std::int64_t>& shape, bool padded) {
  auto b = std::make_unique<Buffer>();
  b->dtype = dtype;
  b->shape = shape;
  b->strides.assign(shape.size(), 1);
  for (std::size_t axis = shape.size(); axis-- > 1;) {
    b->strides[axis - 1] = b->strides[axis] * shape[axis] + (padded ? kPadElements : 0);
  }
  std::int64_t span = 1;
  bool empty = false;
  for (std::size_t axis = 0; axis < shape.size(); ++axis) {
    empty = empty || shape[axis] == 0;
    span += (shape[axis] - 1) * b->strides[axis];
  }
  const std::int64_t elements = (empty ? 0 : span) + (padded ? kPadElements : 0);
  const std::size_t payload = static_cast<std::size_t>(elements) * dtype_size(dtype);
  b->memory = std::make_unique<GuardedBuffer>(device_, payload);
  b->image.resize(b->memory->image_bytes());
  fill_guard_pattern(b->image.data(), b->image.size());
  b->memory->write_image(b->image);
  buffers_[static_cast<int>(tensor)] = std::move(b);
}

std::vector<std::int64_t> LinearCaseTensors::element_offsets(const Buffer& b) const {
  std::int64_t count = 1;
  for (std::int64_t extent : b.shape) count *= extent;
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(count));
  for (std::int64_t e = 0; e < count; ++e) {
    std::int64_t rest = e, offset = 0;
    for (std::size_t axis = b.shape.size(); axis-- > 0;) {
      offset += (rest % b.shape[axis]) * b.strides[axis];
      rest /= b.shape[axis];
    }
    offsets[e] = offset;
  }
  return offsets;
}

void LinearCaseTensors::fill(LinearTensor tensor, const std::vector<double>& values) {
  Buffer& b = *buffers_[static_cast<int>(tensor)];
  const std::vector<std::int64_t> offsets = element_offsets(b);
  if (offsets.size() != values.size()) throw std::logic_error("LinearCaseTensors::fill: size mismatch");
  std::uint8_t* payload = b.image.data() + GuardedBuffer::kGuardBytes;
  for (std::size_t e = 0; e < offsets.size(); ++e) store_element(payload, b.dtype, offsets[e], round_to_dtype(b.dtype, values[e]));
  b.memory->write_image(b.image);
}

bool LinearCaseTensors::has(LinearTensor tensor) const { return buffer(tensor) != nullptr; }

TensorRef LinearCaseTensors::device_view(LinearTensor tensor) const {
  const Buffer* b = buffer(tensor);
  if (b == nullptr) return {};
  return view_over(b->memory->payload(), b->dtype, b->shape, b->strides, device_);
}

TensorRef LinearCaseTensors::host_view(LinearTensor tensor) const {
  const Buffer* b = buffer(tensor);
  if (b == nullptr) return {};
  auto* payload = const_cast<std::uint8_t*>(b->image.data()) + GuardedBuffer::kGuardBytes;
  return view_over(payload, b->dtype, b->shape, b->strides, Device::cpu());
}

std::vector<std::int64_t> LinearCaseTensors::shape(LinearTensor tensor) const {
  const Buffer* b = buffer(tensor);
  return b == nullptr ? std::vector<std::int64_t>{} : b->shape;
}

LinearForwardArgs LinearCaseTensors::forward_args(Backend backend) const {
  LinearForwardArgs a;
  a.q = device_view(LinearTensor::kQ);
  a.k = device_view(LinearTensor::kK);
  a.v = device_view(LinearTensor::kV);
  a.g = device_view(LinearTensor::kG);
  a.beta = device_view(LinearTensor::kBeta);
  a.A_log = device_view(LinearTensor::kALog);
  a.dt_bias = device_view(LinearTensor::kDtBias);
  a.out = device_view(LinearTensor::kOut);
  a.initial_state = device_view(LinearTensor::kInitialState);
  a.final_state = device_view(LinearTensor::kFinalState);
  a.cu_seqlens = device_view(LinearTensor::kCuSeqlens);
  a.options = case_.options(backend);
  return a;
}

LinearBackwardArgs LinearCaseTensors::backward_args(Backend backend) const {
  LinearBackwardArgs a;
  a.q = device_view(LinearTensor::kQ);
  a.k = device_view(LinearTensor::kK);
  a.v = device_view(LinearTensor::kV);
  a.g = device_view(LinearTensor::kG);
  a.beta = device_view(LinearTensor::kBeta);
  a.A_log = device_view(LinearTensor::kALog);
  a.dt_bias = device_view(LinearTensor::kDtBias);
  a.initial_state = device_view(LinearTensor::kInitialState);
  a.cu_seqlens = device_view(LinearTensor::kCuSeqlens);
  a.dout = device_view(LinearTensor::kDout);
  a.dfinal_state = device_view(LinearTensor::kDfinalState);
  a.dq = device_view(LinearTensor::kDq);
  a.dk = device_view(LinearTensor::kDk);
  a.dv = device_view(LinearTensor::kDv);
  a.dg = device_view(LinearTensor::kDg);
  a.dbeta = device_view(LinearTensor::kDbeta);
  a.d_initial_state = device_view(LinearTensor::kDInitialState);
  a.dA_log = device_view(LinearTensor::kDALog);
  a.ddt_bias = device_view(LinearTensor::kDdtBias);
  a.options = case_.options(backend);
  return a;
}

LinearDecodeArgs LinearCaseTensors::decode_args(Backend backend) const {
  LinearDecodeArgs a;
  a.q = device_view(LinearTensor::kQ);
  a.k = device_view(LinearTensor::kK);
  a.v = device_view(LinearTensor::kV);
  a.g = device_view(LinearTensor::kG);
  a.beta = device_view(LinearTensor::kBeta);
  a.A_log = device_view(LinearTensor::kALog);
  a.dt_bias = device_view(LinearTensor::kDtBias);
  a.out = device_view(LinearTensor::kOut);
  a.state = device_view(LinearTensor::kState);
  a.state_indices = device_view(LinearTensor::kStateIndices);
  a.options = case_.options(backend);
  return a;
}

reference::LinearReferenceInputs LinearCaseTensors::reference_inputs() const {
  reference::LinearReferenceInputs in;
  in.q = host_view(LinearTensor::kQ);
  in.k = host_view(LinearTensor::kK);
  in.v = host_view(LinearTensor::kV);
  in.g = host_view(LinearTensor::kG);
  in.beta = host_view(LinearTensor::kBeta);
  in.A_log = host_view(LinearTensor::kALog);
  in.dt_bias = host_view(LinearTensor::kDtBias);
  in.initial_state = host_view(call_ == LinearCall::kDecode ? LinearTensor::kState : LinearTensor::kInitialState);
  in.cu_seqlens = host_view(LinearTensor::kCuSeqlens);
  in.state_indices = host_view(LinearTensor::kStateIndices);
  in.options = case_.options(Backend::kAuto);
  return in;
}

std::vector<double> LinearCaseTensors::read_values(LinearTensor tensor) const {
  const Buffer& b = *buffer(tensor);
  const std::vector<std::uint8_t> image = b.memory->read_image();
  const std::vector<std::int64_t> offsets = element_offsets(b);
  std::vector<double> values(offsets.size());
  for (std::size_t e = 0; e < offsets.size(); ++e) {
    values[e] = load_element(image.data() + GuardedBuffer::kGuardBytes, b.dtype, offsets[e]);
  }
  return values;
}

void LinearCaseTensors::poison(const std::vector<LinearTensor>& outputs) {
  for (LinearTensor t : outputs) {
    if (!has(t)) continue;
    Buffer& b = *buffers_[static_cast<int>(t)];
    std::uint8_t* payload = b.image.data() + GuardedBuffer::kGuardBytes;
    for (std::int64_t offset : element_offsets(b)) {
      store_element(payload, b.dtype, offset, std::numeric_limits<double>::quiet_NaN());
    }
    b.memory->write_image(b.image);
  }
}

std::string LinearCaseTensors::check_untouched(const std::vector<LinearTensor>& writable) {
  std::string report;
  for (int index = 0; index < kLinearTensorCount; ++index) {
    if (!buffers_[index]) continue;
    Buffer& b = *buffers_[index];
    std::vector<std::uint8_t> allowed(b.image.size(), 0);
    if (std::find(writable.begin(), writable.end(), static_cast<LinearTensor>(index)) != writable.end()) {
      const std::size_t size = dtype_size(b.dtype);
      for (std::int64_t offset : element_offsets(b)) {
        std::fill_n(allowed.begin() + GuardedBuffer::kGuardBytes + offset * size, size, 1);
      }
    }
    const std::vector<std::uint8_t> now = b.memory->read_image();
    std::int64_t changed = 0, first = -1;
    for (std::size_t i = 0; i < now.size(); ++i) {
      if (!allowed[i] && now[i] != b.image[i]) {
        if (changed++ == 0) first = static_cast<std::int64_t>(i) - static_cast<std::int64_t>(GuardedBuffer::kGuardBytes);
      }
    }
    if (changed > 0) {
      report += std::string(kTensorNames[index]) + ": " + std::to_string(changed) +
                " bytes changed outside its writable elements, first at payload byte " + std::to_string(first) + "\n";
    }
    b.image = now;
  }
  return report;
}

std::string RmsReport::text() const {
  char line[256];
  std::snprintf(line, sizeof(line), "%-15s %s: rms(err)/rms(ref) %.3e %s %.3e", name.c_str(), passed ? "ok  " : "FAIL",
                ratio, passed ? "<" : ">=", bound);
  return line;
}

RmsReport rms_ratio(const std::string& name, const std::vector<double>& actual, const std::vector<double>& reference,
                    double bound) {
  RmsReport r;
  r.name = name;
  r.bound = bound;
  double err_sq = 0.0, ref_sq = 0.0;
  for (std::size_t e = 0; e < reference.size(); ++e) {
    if (!std::isfinite(reference[e])) continue;
    if (!std::isfinite(actual[e])) {
      err_sq = std::numeric_limits<double>::infinity();
      continue;
    }
    err_sq += (actual[e] - reference[e]) * (actual[e] - reference[e]);
    ref_sq += reference[e] * reference[e];
  }
  r.ratio = err_sq == 0.0 ? 0.0 : (ref_sq == 0.0 ? std::numeric_limits<double>::infinity() : std::sqrt(err_sq / ref_sq));
  r.passed = r.ratio < bound;
  return r;
}

std::string LinearCheckResult::report() const {
  std::string text;
  if (!status) text += "status: " + status.to_string() + "\n";
  for (const ToleranceReport& r : comparisons) text += r.text() + "\n";
  for (const RmsReport& r : rms) text += r.text() + "\n";
  for (const std::string& problem : problems) text += "problem: " + problem + "\n";
  return text;
}

namespace {

// Compares one output with its reference and naive twin and appends both reports.
void compare(LinearCheckResult* result, const LinearCaseTensors& tensors, LinearTensor tensor,
             const std::vector<double>& reference, const std::vector<double>& naive, double factor) {
  const TensorRef view = tensors.host_view(tensor);
  const std::vector<double> actual = tensors.read_values(tensor);
  const double atol = default_atol(view.dtype, reference);
  result->comparisons.push_back(
      check_tolerance(linear_tensor_name(tensor), tensors.shape(tensor), actual, reference, naive, factor, atol));
  result->rms.push_back(rms_ratio(linear_tensor_name(tensor), actual, reference,
                                  is_gradient_of_gate_or_beta(tensor) ? kRmsBoundGateBeta : kRmsBoundOutputs));
}

// Runs `call_api`, then checks the status, CUDA errors and the canaries. Returns whether to compare values.
template <typename Call>
bool run_and_check_memory(LinearCheckResult* result, LinearCaseTensors& tensors, Device device, bool no_work,
                          const std::vector<LinearTensor>& writable, Call call_api) {
  result->status = call_api();
  if (is_unsupported(result->status)) {
    result->outcome = CheckOutcome::kUnsupported;
    return false;
  }
  if (!result->status) result->problems.push_back("the call returned " + result->status.to_string());
  if (const std::string error = synchronize(device); !error.empty()) result->problems.push_back(error);
  const std::string changed = tensors.check_untouched(result->status && !no_work ? writable : std::vector<LinearTensor>{});
  if (!changed.empty()) result->problems.push_back(changed);
  return result->status.is_ok() && !no_work;
}

void finish(LinearCheckResult* result) {
  if (result->outcome == CheckOutcome::kUnsupported) return;
  bool passed = result->problems.empty();
  for (const ToleranceReport& r : result->comparisons) passed = passed && r.passed;
  for (const RmsReport& r : result->rms) passed = passed && r.passed;
  result->outcome = passed ? CheckOutcome::kPassed : CheckOutcome::kFailed;
}

}  // namespace

namespace {

template <typename Args>
std::unique_ptr<GuardedBuffer> attach_workspace(Args* args, Device device) {
  std::size_t bytes = 0;
  if (!workspace_size(*args, &bytes) || bytes == 0) return nullptr;
  auto workspace = std::make_unique<GuardedBuffer>(device, bytes);
  args->workspace = workspace->payload();
  args->workspace_bytes = bytes;
  return workspace;
}

}  // namespace

std::unique_ptr<GuardedBuffer> attach_linear_workspace(LinearForwardArgs* args, Device device) {
  return attach_workspace(args, device);
}
std::unique_ptr<GuardedBuffer> attach_linear_workspace(LinearBackwardArgs* args, Device device) {
  return attach_workspace(args, device);
}
std::unique_ptr<GuardedBuffer> attach_linear_workspace(LinearDecodeArgs* args, Device device) {
  return attach_workspace(args, device);
}

LinearCheckResult check_linear_forward(const LinearCase& c, Backend backend, Device device, std::uint64_t seed) {
  LinearCheckResult result;
  LinearCaseTensors tensors(c, LinearCall::kForward, device, seed);
  const reference::LinearReferenceInputs inputs = tensors.reference_inputs();
  const reference::LinearForwardResult ref = reference::linear_forward_reference(inputs);
  const reference::LinearForwardResult naive = reference::linear_forward_naive_lowp(inputs);
  const std::vector<LinearTensor> outputs{LinearTensor::kOut, LinearTensor::kFinalState};
  tensors.poison(outputs);
  LinearForwardArgs args = tensors.forward_args(backend);
  const auto workspace = attach_linear_workspace(&args, device);
  const bool no_work = linear_expects_no_work(c, LinearCall::kForward);
  if (run_and_check_memory(&result, tensors, device, no_work, outputs, [&] { return forward(args); })) {
    compare(&result, tensors, LinearTensor::kOut, ref.out, naive.out, kOutputFactor);
    if (c.final_state) compare(&result, tensors, LinearTensor::kFinalState, ref.state, naive.state, kOutputFactor);
  }
  finish(&result);
  return result;
}

LinearCheckResult check_linear_backward(const LinearCase& c, Backend backend, Device device, std::uint64_t seed) {
  LinearCheckResult result;
  LinearCaseTensors tensors(c, LinearCall::kBackward, device, seed);
  const reference::LinearReferenceInputs inputs = tensors.reference_inputs();
  const TensorRef dout = tensors.host_view(LinearTensor::kDout);
  const TensorRef dfinal = tensors.host_view(LinearTensor::kDfinalState);
  const reference::LinearBackwardResult ref = reference::linear_backward_reference(inputs, dout, dfinal);
  const reference::LinearBackwardResult naive = reference::linear_backward_naive_lowp(inputs, dout, dfinal);
  const std::vector<LinearTensor> outputs{LinearTensor::kDq,    LinearTensor::kDk,    LinearTensor::kDv,
                                          LinearTensor::kDg,    LinearTensor::kDbeta, LinearTensor::kDInitialState,
                                          LinearTensor::kDALog, LinearTensor::kDdtBias};
  tensors.poison(outputs);
  LinearBackwardArgs args = tensors.backward_args(backend);
  const auto workspace = attach_linear_workspace(&args, device);
  const bool no_work = linear_expects_no_work(c, LinearCall::kBackward);
  if (run_and_check_memory(&result, tensors, device, no_work, outputs, [&] { return backward(args); })) {
    compare(&result, tensors, LinearTensor::kDq, ref.dq, naive.dq, kGradientFactor);
    compare(&result, tensors, LinearTensor::kDk, ref.dk, naive.dk, kGradientFactor);
    compare(&result, tensors, LinearTensor::kDv, ref.dv, naive.dv, kGradientFactor);
    compare(&result, tensors, LinearTensor::kDg, ref.dg, naive.dg, kGradientFactor);
    compare(&result, tensors, LinearTensor::kDbeta, ref.dbeta, naive.dbeta, kGradientFactor);
    if (tensors.has(LinearTensor::kDInitialState)) {
      compare(&result, tensors, LinearTensor::kDInitialState, ref.d_initial_state, naive.d_initial_state,
              kGradientFactor);
    }
    if (tensors.has(LinearTensor::kDALog)) {
      compare(&result, tensors, LinearTensor::kDALog, ref.dA_log, naive.dA_log, kGradientFactor);
    }
    if (tensors.has(LinearTensor::kDdtBias)) {
      compare(&result, tensors, LinearTensor::kDdtBias, ref.ddt_bias, naive.ddt_bias, kGradientFactor);
    }
  }
  finish(&result);
  return result;
}

LinearCheckResult check_linear_decode(const LinearCase& c, Backend backend, Device device, std::uint64_t seed) {
  LinearCheckResult result;
  LinearCaseTensors tensors(c, LinearCall::kDecode, device, seed);
  const reference::LinearReferenceInputs inputs = tensors.reference_inputs();
  const reference::LinearForwardResult ref = reference::linear_decode_reference(inputs);
  const reference::LinearForwardResult naive = reference::linear_decode_naive_lowp(inputs);
  tensors.poison({LinearTensor::kOut});
  LinearDecodeArgs args = tensors.decode_args(backend);
  const auto workspace = attach_linear_workspace(&args, device);
  const bool no_work = linear_expects_no_work(c, LinearCall::kDecode);
  if (run_and_check_memory(&result, tensors, device, no_work, {LinearTensor::kOut, LinearTensor::kState},
                           [&] { return decode(args); })) {
    compare(&result, tensors, LinearTensor::kOut, ref.out, naive.out, kOutputFactor);
    compare(&result, tensors, LinearTensor::kState, ref.state, naive.state, kOutputFactor);
  }
  finish(&result);
  return result;
}

}  // namespace attnkit::testing
