// Dispatch entry points for bindings that allocate the workspace themselves (the Python extension):
// one plan per call instead of the public API's three (a forward() refused for lack of workspace,
// workspace_size(), forward() again), which on the H100 cost a small call about 8 us of host time
// (bench/python/NOTES.md).
#pragma once

#include <cstddef>

#include "attnkit/dense.h"

namespace attnkit::host {

// Scratch memory on demand: allocate(context, bytes, keeps_zeroed, &zeroed) returns memory of at least
// `bytes` bytes on the arguments' device (ordered on options.stream before the launch), valid until the
// call returns. It may throw; nothing has been launched when it is called. A null result fails the call
// with WorkspaceTooSmall.
// keeps_zeroed: the chosen backend needs the workspace zeroed and leaves it zero when its launch ends
// (DenseBackendOps::forward_keeps_workspace_zeroed). The allocator may then return memory that is all
// zero, ordered on the stream, and used by no other kind of call, and say so by setting *zeroed (false
// on entry): the backend skips its memset (the sm90 forward's cudaMemsetAsync, 0.9 us of host time a
// call on the H100, bench/python/NOTES.md). Memory given out with *zeroed must not be handed to a call
// without keeps_zeroed: such a backend may leave anything in it.
struct WorkspaceAllocator {
  void* (*allocate)(void* context, std::size_t bytes, bool keeps_zeroed, bool* zeroed) = nullptr;
  void* context = nullptr;
};

// forward()/backward() with the same validation, backend choice and errors, except that a workspace
// smaller than the chosen backend needs is replaced by one from `allocator` (asked only then, once).
Status forward_allocating(DenseForwardArgs args, const WorkspaceAllocator& allocator);
Status backward_allocating(DenseBackwardArgs args, const WorkspaceAllocator& allocator);

}  // namespace attnkit::host
