// Turns the arrays a Python caller passes into attnkit::TensorRef views: no copy, strides passed
// through as they are (the C++ validation decides what it accepts).
//
// Two importers, chosen per call by the Python layer (python/attnkit/_core.py):
//  - kTorch: torch.Tensor read through its own attributes (data_ptr, shape, stride, dtype, device).
//    Not DLPack, because torch's __dlpack__ is Python code that costs microseconds per tensor and
//    refuses tensors that require grad; the attribute reads are C calls.
//  - kDLPack / kDLPackBf16: any other array (NumPy, CuPy, JAX, ...) through nanobind's ndarray caster,
//    i.e. __dlpack__ or the buffer protocol. kDLPackBf16 reads uint16 arrays as bf16: NumPy cannot
//    export ml_dtypes.bfloat16 through DLPack, so the Python layer passes a uint16 view of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include "attnkit/types.h"

namespace attnkit::python {

enum class Importer : int {
  kTorch = 0,
  kDLPack = 1,
  kDLPackBf16 = 2,
};

// Remembers torch.Tensor and torch's dtype objects, so that a tensor and its dtype are recognised by
// identity (a pointer compare instead of a string), and `current_stream`, a callable (device index) ->
// the raw cudaStream_t of that device's current stream as an int, and torch.empty_like.
void set_torch_types(nanobind::handle tensor_type, nanobind::handle float16, nanobind::handle bfloat16,
                     nanobind::handle float32, nanobind::handle float64, nanobind::handle int32,
                     nanobind::handle uint8, nanobind::handle current_stream, nanobind::handle empty_like);

// Keeps the imported DLPack views (and so the producer's buffers) alive until the call returns.
using ImportKeepAlive = std::vector<nanobind::ndarray<nanobind::ro>>;

// `name` appears in error messages ("q: ..."). None gives an undefined TensorRef (an absent optional
// tensor). Raises TypeError for something that is not an array, ValueError for an array attnkit
// cannot describe (rank above 4, dtype without an attnkit equivalent, a device other than CPU/CUDA).
TensorRef import_tensor(Importer importer, const char* name, nanobind::handle object, ImportKeepAlive* keep);

// A torch.Tensor with a rank the caller requires: false (nothing raised) when `object` is None or a tensor
// of another rank, so that the Python layer can raise its own error; other problems raise as above.
bool import_torch_with_rank(const char* name, nanobind::handle object, int rank, TensorRef* ref);

// A new contiguous tensor `like.new_empty(shape)` (fp32 when `fp32`, else like's dtype) on like's device,
// described in `ref` from what was asked for: only its address is read back.
nanobind::object torch_new_empty(nanobind::handle like, const TensorRef& like_ref, const std::int64_t* shape,
                                 int rank, bool fp32, TensorRef* ref);

// torch.empty_like(like) for a `like` whose strides are contiguous on every axis longer than 1
// (is_contiguous_ref): the result is contiguous in like's shape, dtype and device, described in `ref` as
// contiguous. Its strides may differ from those of `ref` only on axes of extent 1, which are never
// stepped along. torch.empty_like costs 0.8 us less than new_empty on the H100 host (and 1.8 us less on
// the 2-core CI VM), as it parses no shape (bench/python/NOTES.md).
nanobind::object torch_empty_like(nanobind::handle like, const TensorRef& like_ref, TensorRef* ref);

// True when `ref`'s strides are those of a contiguous tensor on every axis longer than 1.
bool is_contiguous_ref(const TensorRef& ref);

// Scratch memory of `bytes` bytes on like's device for work queued on `stream`; returns its address.
// On a CUDA stream that is not capturing a graph, one buffer per (device, stream) is kept and reused
// (at most 64 streams; the memory stays allocated for the life of the process): every use is ordered
// on that one stream, so a call cannot overlap the previous one's use. This saves torch's allocator
// call (about 3 us on the H100 host, bench/python/NOTES.md) on every call of a backend that needs a
// workspace. Streams are told apart by cudaStreamGetId, which is never reused, unlike a handle freed by
// cudaStreamDestroy. While the stream captures a CUDA graph, and on the CPU, it is a fresh
// like.new_empty((bytes,), dtype=torch.uint8) instead, kept alive by *owner (during capture, torch
// allocates from the graph's private pool, and the graph may replay on another stream).
// keeps_zeroed (host::WorkspaceAllocator): the call's backend leaves its workspace zero. Such calls get
// a second buffer per (device, stream), zeroed once when it is made and used by no other call, and
// *zeroed is set (the backend then skips its own memset). A fresh buffer is never reported zeroed.
void* torch_workspace(nanobind::handle like, const TensorRef& like_ref, std::uintptr_t stream, std::size_t bytes,
                      bool keeps_zeroed, bool* zeroed, nanobind::object* owner);

// The current stream of a CUDA device (torch's), as an integer cudaStream_t.
std::uintptr_t torch_current_stream(int device_index);

// The device of an imported (defined) tensor, or the CPU for an undefined one.
inline bool on_cpu(const TensorRef& t) { return !t.defined() || t.device.kind == DeviceKind::kCPU; }

}  // namespace attnkit::python
