#include "tensor_import.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "attnkit/build_config.h"
#if ATTNKIT_ENABLE_CUDA
#include <cuda_runtime.h>
#endif

namespace nb = nanobind;

namespace attnkit::python {
namespace {

// Strong references, set once from Python (python/attnkit/_torch_ops.py) and kept for the life of the
// process: torch's dtype objects are singletons, so identity comparison is exact.
struct TorchTypes {
  PyObject* tensor_type = nullptr;
  PyObject* float16 = nullptr;
  PyObject* bfloat16 = nullptr;
  PyObject* float32 = nullptr;
  PyObject* float64 = nullptr;
  PyObject* int32 = nullptr;
  PyObject* uint8 = nullptr;
  PyObject* current_stream = nullptr;
  PyObject* empty_like = nullptr;
};
TorchTypes torch_types;

// Attribute names, interned once: PyObject_GetAttr with an interned string skips the string hash.
struct Names {
  PyObject* data_ptr = PyUnicode_InternFromString("data_ptr");
  PyObject* shape = PyUnicode_InternFromString("shape");
  PyObject* stride = PyUnicode_InternFromString("stride");
  PyObject* dtype = PyUnicode_InternFromString("dtype");
  PyObject* is_cuda = PyUnicode_InternFromString("is_cuda");
  PyObject* is_cpu = PyUnicode_InternFromString("is_cpu");
  PyObject* get_device = PyUnicode_InternFromString("get_device");
  PyObject* device = PyUnicode_InternFromString("device");
  PyObject* new_empty = PyUnicode_InternFromString("new_empty");
  PyObject* dtype_keyword = PyTuple_Pack(1, dtype);  // kwnames of new_empty(shape, dtype=...)
};
const Names& names() {
  static const Names interned;  // built on first use, with the GIL held
  return interned;
}

nb::object checked(PyObject* result) {
  if (result == nullptr) throw nb::python_error();
  return nb::steal(result);
}

// tensor.data_ptr() as an address (0 is a valid answer for a tensor without elements).
void* torch_data_ptr(nb::handle tensor) {
  nb::object data_ptr = checked(PyObject_CallMethodNoArgs(tensor.ptr(), names().data_ptr));
  void* data = PyLong_AsVoidPtr(data_ptr.ptr());
  if (data == nullptr && PyErr_Occurred()) throw nb::python_error();
  return data;
}

// The strides of a compact row-major tensor of ref's shape (an axis of extent 0 counts as 1).
void set_contiguous_strides(TensorRef* ref) {
  std::int64_t stride = 1;
  for (int axis = ref->rank - 1; axis >= 0; --axis) {
    ref->strides[axis] = stride;
    stride *= std::max<std::int64_t>(ref->shape[axis], 1);
  }
}

std::string python_type_name(nb::handle object) { return nb::type_name(object.type()).c_str(); }

[[noreturn]] void rank_too_high(const char* name, std::size_t rank) {
  throw nb::value_error((std::string(name) + ": expected rank at most " + std::to_string(TensorRef::kMaxRank) +
                         ", got rank " + std::to_string(rank))
                            .c_str());
}

// Reads a tuple of Python ints (torch.Size or the tuple of Tensor.stride()) into `values`.
void read_int_tuple(nb::handle tuple, std::int64_t* values, Py_ssize_t count) {
  for (Py_ssize_t i = 0; i < count; ++i) {
    const long long value = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple.ptr(), i));
    if (value == -1 && PyErr_Occurred()) throw nb::python_error();
    values[i] = value;
  }
}

// `required_rank` >= 0: a tensor of another rank returns false before anything else is read.
bool import_torch(const char* name, nb::handle object, int required_rank, TensorRef* out) {
  if (torch_types.tensor_type == nullptr) {
    throw nb::type_error("attnkit: torch tensors were passed before the torch support was loaded");
  }
  if (!PyObject_TypeCheck(object.ptr(), reinterpret_cast<PyTypeObject*>(torch_types.tensor_type))) {
    throw nb::type_error(
        (std::string(name) + ": expected a torch.Tensor (like q), got " + python_type_name(object)).c_str());
  }
  const Names& n = names();
  TensorRef& ref = *out;
  ref = TensorRef{};

  nb::object shape = checked(PyObject_GetAttr(object.ptr(), n.shape));
  const Py_ssize_t rank = PyTuple_GET_SIZE(shape.ptr());
  if (required_rank >= 0 && rank != required_rank) return false;
  if (rank > TensorRef::kMaxRank) rank_too_high(name, static_cast<std::size_t>(rank));

  nb::object dtype = checked(PyObject_GetAttr(object.ptr(), n.dtype));
  const PyObject* d = dtype.ptr();
  if (d == torch_types.bfloat16) {
    ref.dtype = DType::kBFloat16;
  } else if (d == torch_types.float16) {
    ref.dtype = DType::kFloat16;
  } else if (d == torch_types.float32) {
    ref.dtype = DType::kFloat32;
  } else if (d == torch_types.int32) {
    ref.dtype = DType::kInt32;
  } else if (d == torch_types.float64) {
    ref.dtype = DType::kFloat64;  // rejected by the validation with its own message
  } else {
    throw nb::value_error((std::string(name) + ": dtype " + nb::str(dtype).c_str() +
                           " is not supported (fp16, bf16 or fp32; index tensors int32)")
                              .c_str());
  }

  nb::object is_cuda = checked(PyObject_GetAttr(object.ptr(), n.is_cuda));
  if (is_cuda.ptr() == Py_True) {
    nb::object index = checked(PyObject_CallMethodNoArgs(object.ptr(), n.get_device));
    ref.device = Device::cuda(static_cast<int>(PyLong_AsLong(index.ptr())));
  } else {
    nb::object is_cpu = checked(PyObject_GetAttr(object.ptr(), n.is_cpu));
    if (is_cpu.ptr() != Py_True) {
      nb::object device = checked(PyObject_GetAttr(object.ptr(), n.device));
      throw nb::value_error((std::string(name) + ": tensors on device '" + nb::str(device).c_str() +
                             "' are not supported (CPU or CUDA only)")
                                .c_str());
    }
    ref.device = Device::cpu();
  }

  nb::object strides = checked(PyObject_CallMethodNoArgs(object.ptr(), n.stride));
  ref.rank = static_cast<int>(rank);
  read_int_tuple(shape, ref.shape, rank);
  read_int_tuple(strides, ref.strides, rank);

  ref.data = torch_data_ptr(object);
  return true;
}

std::string dlpack_dtype_name(nb::dlpack::dtype dtype) {
  const char* kind = nullptr;
  switch (static_cast<nb::dlpack::dtype_code>(dtype.code)) {
    case nb::dlpack::dtype_code::Int: kind = "int"; break;
    case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
    case nb::dlpack::dtype_code::Float: kind = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: kind = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
    case nb::dlpack::dtype_code::Bool: kind = "bool"; break;
    default: return "DLPack type code " + std::to_string(dtype.code) + " with " + std::to_string(dtype.bits) + " bits";
  }
  std::string text = kind + std::to_string(dtype.bits);
  if (dtype.lanes != 1) text += "x" + std::to_string(dtype.lanes);
  return text;
}

DType dlpack_dtype(const char* name, nb::dlpack::dtype dtype, bool uint16_is_bf16) {
  using Code = nb::dlpack::dtype_code;
  const auto code = static_cast<Code>(dtype.code);
  if (dtype.lanes == 1) {
    if (code == Code::Float && dtype.bits == 16) return DType::kFloat16;
    if (code == Code::Float && dtype.bits == 32) return DType::kFloat32;
    if (code == Code::Float && dtype.bits == 64) return DType::kFloat64;  // rejected by the validation
    if (code == Code::Bfloat && dtype.bits == 16) return DType::kBFloat16;
    if (code == Code::Int && dtype.bits == 32) return DType::kInt32;
    if (code == Code::UInt && dtype.bits == 16 && uint16_is_bf16) return DType::kBFloat16;
  }
  throw nb::value_error((std::string(name) + ": dtype " + dlpack_dtype_name(dtype) +
                         " is not supported (fp16, bf16 or fp32; index tensors int32)")
                            .c_str());
}

// DLPack device types (dlpack.h): 1 CPU, 2 CUDA, 3 CUDA pinned host memory, 13 CUDA managed memory.
constexpr int kDLCPU = 1;
constexpr int kDLCUDA = 2;
constexpr int kDLCUDAHost = 3;
constexpr int kDLCUDAManaged = 13;

TensorRef import_dlpack(const char* name, nb::handle object, bool uint16_is_bf16, ImportKeepAlive* keep) {
  // Read-only views are accepted (broadcast inputs are read-only in NumPy); attnkit writes only the
  // outputs, which the Python layer allocates itself. convert=false: never copy.
  nb::ndarray<nb::ro> array;
  if (!nb::try_cast(object, array, /*convert=*/false)) {
    const bool looks_like_array = PyObject_HasAttrString(object.ptr(), "__dlpack__") ||
                                  PyObject_CheckBuffer(object.ptr());
    if (looks_like_array) {
      throw nb::value_error((std::string(name) + ": this " + python_type_name(object) +
                             " cannot be viewed through DLPack or the buffer protocol (strides that are not a "
                             "multiple of the item size?)")
                                .c_str());
    }
    throw nb::type_error((std::string(name) + ": expected an array (DLPack or buffer protocol), got " +
                          python_type_name(object))
                             .c_str());
  }
  TensorRef ref;
  if (array.ndim() > static_cast<std::size_t>(TensorRef::kMaxRank)) rank_too_high(name, array.ndim());
  ref.dtype = dlpack_dtype(name, array.dtype(), uint16_is_bf16);
  switch (array.device_type()) {
    case kDLCPU:
    case kDLCUDAHost:  // pinned host memory: the CPU reads it directly
      ref.device = Device::cpu();
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      ref.device = Device::cuda(array.device_id());
      break;
    default:
      throw nb::value_error((std::string(name) + ": arrays on DLPack device type " +
                             std::to_string(array.device_type()) + " are not supported (CPU or CUDA only)")
                                .c_str());
  }
  ref.rank = static_cast<int>(array.ndim());
  for (int axis = 0; axis < ref.rank; ++axis) {
    ref.shape[axis] = static_cast<std::int64_t>(array.shape(static_cast<std::size_t>(axis)));
    ref.strides[axis] = array.stride(static_cast<std::size_t>(axis));
  }
  if (array.size() == 0) {
    // An array without elements has no addresses, and producers export arbitrary strides for it (NumPy
    // exports 0 for every axis): describe it as compact, which the validation accepts.
    set_contiguous_strides(&ref);
  }
  ref.data = const_cast<void*>(array.data());
  keep->push_back(std::move(array));
  return ref;
}

}  // namespace

void set_torch_types(nb::handle tensor_type, nb::handle float16, nb::handle bfloat16, nb::handle float32,
                     nb::handle float64, nb::handle int32, nb::handle uint8, nb::handle current_stream,
                     nb::handle empty_like) {
  torch_types = TorchTypes{nb::handle(tensor_type).inc_ref().ptr(), nb::handle(float16).inc_ref().ptr(),
                           nb::handle(bfloat16).inc_ref().ptr(),   nb::handle(float32).inc_ref().ptr(),
                           nb::handle(float64).inc_ref().ptr(),    nb::handle(int32).inc_ref().ptr(),
                           nb::handle(uint8).inc_ref().ptr(),      nb::handle(current_stream).inc_ref().ptr(),
                           nb::handle(empty_like).inc_ref().ptr()};
}

bool import_torch_with_rank(const char* name, nb::handle object, int rank, TensorRef* ref) {
  return !object.is_none() && import_torch(name, object, rank, ref);
}

nb::object torch_new_empty(nb::handle like, const TensorRef& like_ref, const std::int64_t* shape, int rank,
                           bool fp32, TensorRef* ref) {
  nb::object sizes = checked(PyTuple_New(rank));
  for (int axis = 0; axis < rank; ++axis) {
    PyTuple_SET_ITEM(sizes.ptr(), axis, checked(PyLong_FromLongLong(shape[axis])).release().ptr());
  }
  const Names& n = names();
  PyObject* args[] = {like.ptr(), sizes.ptr(), torch_types.float32};
  nb::object tensor = checked(PyObject_VectorcallMethod(n.new_empty, args, 2,
                                                        fp32 ? n.dtype_keyword : nullptr));
  *ref = TensorRef{};
  ref->data = torch_data_ptr(tensor);
  ref->dtype = fp32 ? DType::kFloat32 : like_ref.dtype;
  ref->device = like_ref.device;
  ref->rank = rank;
  std::copy(shape, shape + rank, ref->shape);
  set_contiguous_strides(ref);
  return tensor;
}

bool is_contiguous_ref(const TensorRef& ref) {
  std::int64_t stride = 1;
  for (int axis = ref.rank - 1; axis >= 0; --axis) {
    if (ref.shape[axis] > 1 && ref.strides[axis] != stride) return false;
    stride *= std::max<std::int64_t>(ref.shape[axis], 1);
  }
  return true;
}

nb::object torch_empty_like(nb::handle like, const TensorRef& like_ref, TensorRef* ref) {
  nb::object tensor = checked(PyObject_CallOneArg(torch_types.empty_like, like.ptr()));
  *ref = like_ref;
  ref->data = torch_data_ptr(tensor);
  set_contiguous_strides(ref);
  return tensor;
}

namespace {

// like.new_empty((bytes,), dtype=torch.uint8), and its address.
void* torch_new_bytes(nb::handle like, std::size_t bytes, nb::object* owner) {
  nb::object sizes = checked(PyTuple_New(1));
  PyTuple_SET_ITEM(sizes.ptr(), 0, checked(PyLong_FromSize_t(bytes)).release().ptr());
  const Names& n = names();
  PyObject* args[] = {like.ptr(), sizes.ptr(), torch_types.uint8};
  *owner = checked(PyObject_VectorcallMethod(n.new_empty, args, 2, n.dtype_keyword));
  return torch_data_ptr(*owner);
}

#if ATTNKIT_ENABLE_CUDA
struct StreamWorkspace {
  int device;
  unsigned long long stream_id;
  bool zeroed;  // the buffer of calls that leave it zero (keeps_zeroed); zeroed when made
  std::size_t bytes;
  void* data;
  PyObject* tensor;  // a strong reference, never released: the buffer lives as long as the process
};
constexpr std::size_t kMaxStreamWorkspaces = 64;

// A buffer of `bytes` bytes for the table: zeroed on the stream when `zeroed` (once, when it is made).
void* new_stream_buffer(nb::handle like, cudaStream_t stream, std::size_t bytes, bool zeroed, nb::object* tensor) {
  void* data = torch_new_bytes(like, bytes, tensor);
  if (zeroed) {
    if (cudaError_t error = cudaMemsetAsync(data, 0, bytes, stream); error != cudaSuccess) {
      cudaGetLastError();  // not the next launch's error to report
      throw std::runtime_error(std::string("attnkit: zeroing the per-stream workspace: ") +
                               cudaGetErrorString(error));
    }
  }
  return data;
}

// The reusable buffer of (device, stream, zeroed), or nullptr: the stream is capturing a graph, its state
// cannot be read, or the table is full. Called with the GIL held, which guards the table.
void* stream_workspace(nb::handle like, int device, std::uintptr_t stream, std::size_t bytes, bool zeroed) {
  static std::vector<StreamWorkspace>& table = *new std::vector<StreamWorkspace>();  // leaked: see above
  const auto handle = reinterpret_cast<cudaStream_t>(stream);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  unsigned long long stream_id = 0;
  if (cudaStreamIsCapturing(handle, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone ||
      cudaStreamGetId(handle, &stream_id) != cudaSuccess) {
    // (The legacy stream answers cudaErrorStreamCaptureImplicit while another stream captures.) Clear the
    // error, which the launch's cudaGetLastError() would otherwise report as its own.
    cudaGetLastError();
    return nullptr;
  }
  for (StreamWorkspace& entry : table) {
    if (entry.device != device || entry.stream_id != stream_id || entry.zeroed != zeroed) continue;
    if (entry.bytes >= bytes) return entry.data;
    // Too small: a larger one replaces it. The old tensor goes back to torch's allocator, which hands
    // its memory only to work queued after this point on the same stream.
    nb::object tensor;
    void* data = new_stream_buffer(like, handle, bytes, zeroed, &tensor);
    Py_DECREF(entry.tensor);
    entry = StreamWorkspace{device, stream_id, zeroed, bytes, data, tensor.release().ptr()};
    return data;
  }
  if (table.size() >= kMaxStreamWorkspaces) return nullptr;
  nb::object tensor;
  void* data = new_stream_buffer(like, handle, bytes, zeroed, &tensor);
  table.push_back(StreamWorkspace{device, stream_id, zeroed, bytes, data, tensor.release().ptr()});
  return data;
}
#endif

}  // namespace

void* torch_workspace(nb::handle like, const TensorRef& like_ref, std::uintptr_t stream, std::size_t bytes,
                      bool keeps_zeroed, bool* zeroed, nb::object* owner) {
#if ATTNKIT_ENABLE_CUDA
  if (like_ref.device.kind == DeviceKind::kCUDA) {
    if (void* data = stream_workspace(like, like_ref.device.index, stream, bytes, keeps_zeroed)) {
      *zeroed = keeps_zeroed;
      return data;
    }
  }
#endif
  return torch_new_bytes(like, bytes, owner);
}

std::uintptr_t torch_current_stream(int device_index) {
  nb::object index = checked(PyLong_FromLong(device_index));
  nb::object stream = checked(PyObject_CallOneArg(torch_types.current_stream, index.ptr()));
  const auto value = static_cast<std::uintptr_t>(PyLong_AsUnsignedLongLong(stream.ptr()));
  if (PyErr_Occurred()) throw nb::python_error();
  return value;
}

TensorRef import_tensor(Importer importer, const char* name, nb::handle object, ImportKeepAlive* keep) {
  if (object.is_none()) return TensorRef{};
  switch (importer) {
    case Importer::kTorch: {
      TensorRef ref;
      import_torch(name, object, /*required_rank=*/-1, &ref);
      return ref;
    }
    case Importer::kDLPack: return import_dlpack(name, object, /*uint16_is_bf16=*/false, keep);
    case Importer::kDLPackBf16: return import_dlpack(name, object, /*uint16_is_bf16=*/true, keep);
  }
  throw nb::value_error("attnkit: unknown array importer");
}

}  // namespace attnkit::python
