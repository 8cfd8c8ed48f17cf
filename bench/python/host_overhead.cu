// Host time per call of attnkit's C++ dense forward on preallocated CUDA buffers, the C++ floor under
// the Python call that bench/python/overhead.py times, split into the steps of the call, beside the
// CUDA floors every launch pays: an empty kernel launch (with a small and with a kernel-sized parameter
// block), cudaMemsetAsync of the tile counter, and the TMA descriptor encoding CuTe's make_tma_copy does
// on the host (the driver entry-point lookup and cuTensorMapEncodeTiled, three of each per sm90 launch).
//
// How: before each batch of --calls calls a spinning kernel keeps the GPU busy for ~10 ms, so every call
// only enqueues its work and returns; the batch's host time / calls is one sample, the median of
// --repeats batches is reported (as overhead.py does). Shape: B=1, S=128, H=8, D=64, bf16, causal (the
// overhead.py default).
//
// Usage: attnkit_host_overhead [--json FILE] [--calls 200] [--repeats 30] [--commit SHA]
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "host/dense_dispatch.h"
#include "host/dense_problem.h"
#include "kernels/dense/sm90/dense_sm90.h"

namespace {

__global__ void spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

__global__ void empty_kernel() {}

// The sm90 forward kernel's parameter block is ForwardParams plus three 128-byte TMA descriptors; 768
// bytes is of that order (a launch copies its parameters into the command stream).
struct LargeParams {
  unsigned char bytes[768];
};
__global__ void empty_kernel_large_params(const __grid_constant__ LargeParams params) {}

void check(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(error));
    std::exit(1);
  }
}

void check(const attnkit::Status& status, const char* what) {
  if (!status) {
    std::fprintf(stderr, "%s: %s\n", what, status.to_string().c_str());
    std::exit(1);
  }
}

attnkit::TensorRef bshd(void* data, attnkit::DType dtype, std::int64_t b, std::int64_t s, std::int64_t h,
                        std::int64_t d) {
  attnkit::TensorRef t;
  t.data = data;
  t.dtype = dtype;
  t.device = attnkit::Device::cuda(0);
  t.rank = 4;
  const std::int64_t shape[4] = {b, s, h, d};
  const std::int64_t strides[4] = {s * h * d, h * d, d, 1};
  for (int axis = 0; axis < 4; ++axis) {
    t.shape[axis] = shape[axis];
    t.strides[axis] = strides[axis];
  }
  return t;
}

struct Row {
  std::string name;
  double median_us;
  double best_us;
  std::string note;
};

}  // namespace

int main(int argc, char** argv) {
  int calls = 200;
  int repeats = 30;
  const char* json_path = nullptr;
  const char* commit = "unknown";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--calls")) calls = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--commit")) commit = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  constexpr std::int64_t B = 1, S = 128, H = 8, D = 64;
  check(cudaSetDevice(0), "cudaSetDevice");
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  const std::size_t bytes = B * S * H * D * 2;
  void *q, *k, *v, *out, *lse, *workspace;
  for (void** p : {&q, &k, &v, &out}) {
    check(cudaMalloc(p, bytes), "cudaMalloc");
    check(cudaMemset(*p, 0, bytes), "cudaMemset");
  }
  check(cudaMalloc(&lse, B * H * S * 4), "cudaMalloc");
  check(cudaMalloc(&workspace, 256), "cudaMalloc");

  attnkit::DenseForwardArgs args;
  args.q = bshd(q, attnkit::DType::kBFloat16, B, S, H, D);
  args.k = bshd(k, attnkit::DType::kBFloat16, B, S, H, D);
  args.v = bshd(v, attnkit::DType::kBFloat16, B, S, H, D);
  args.out = bshd(out, attnkit::DType::kBFloat16, B, S, H, D);
  args.options.causal = true;
  args.options.stream = stream;
  std::size_t workspace_bytes = 0;
  check(attnkit::workspace_size(args, &workspace_bytes), "workspace_size");
  args.workspace = workspace;
  args.workspace_bytes = 256;
  attnkit::Explanation explanation = attnkit::explain(args);
  std::printf("%s (workspace %zu bytes)\n", explanation.to_string().c_str(), workspace_bytes);

  attnkit::DenseForwardArgs args_sm80 = args;
  args_sm80.options.backend = attnkit::Backend::kSm80;
  attnkit::DenseForwardArgs args_no_workspace = args;
  args_no_workspace.workspace = nullptr;
  args_no_workspace.workspace_bytes = 0;
  attnkit::host::DenseProblem problem;
  check(attnkit::host::make_dense_problem(args, &problem), "make_dense_problem");
  // The Python extension's per-stream buffer for the sm90 forward: zeroed once, used by nothing but sm90
  // forwards, which leave it zero; handed over with zeroed = true, so the launch skips its memset.
  void* zeroed_workspace = nullptr;
  check(cudaMalloc(&zeroed_workspace, 256), "cudaMalloc");
  check(cudaMemset(zeroed_workspace, 0, 256), "cudaMemset");
  const attnkit::host::WorkspaceAllocator zeroed_allocator{
      [](void* context, std::size_t, bool keeps_zeroed, bool* zeroed) {
        *zeroed = keeps_zeroed;
        return keeps_zeroed ? context : nullptr;
      },
      zeroed_workspace};
  attnkit::host::DenseProblem problem_zeroed = problem;
  problem_zeroed.workspace_zeroed = true;
  attnkit::DenseForwardArgs args_zeroed = args;
  args_zeroed.workspace = zeroed_workspace;

  // The driver entry point CuTe looks up on every make_tma_copy (cutlass/cuda_host_adapter.hpp without
  // CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL), and a descriptor of q's shape as the sm90 launch builds it.
  PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  {
    cudaDriverEntryPointQueryResult found;
    check(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&encode), 12000,
                                           cudaEnableDefault, &found),
          "cudaGetDriverEntryPointByVersion");
  }
  alignas(64) CUtensorMap tensor_map;
  const cuuint64_t dims[4] = {D, S, H, B};
  const cuuint64_t strides[3] = {H * D * 2, D * 2, S * H * D * 2};
  const cuuint32_t box[4] = {64, 64, 1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  auto encode_q = [&] {
    return encode(&tensor_map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, q, dims, strides, box, element_strides,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  };
  if (encode_q() != CUDA_SUCCESS) std::fprintf(stderr, "cuTensorMapEncodeTiled failed (row still timed)\n");

  int clock_khz = 0;
  check(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0), "cudaDeviceGetAttribute");
  const long long spin_cycles = static_cast<long long>(clock_khz) * 10;  // ~10 ms
  std::vector<Row> rows;
  using attnkit::Status;
  auto cuda = [](cudaError_t error) {
    return error == cudaSuccess ? Status::ok() : Status{attnkit::StatusCode::kCudaError, cudaGetErrorString(error)};
  };
  // Times `call`; a call that fails is reported (its row then times the failure, not the work).
  auto time = [&](const char* name, const std::function<Status()>& call, const char* note) {
    Status last;
    for (int i = 0; i < 20; ++i) (void)(last = call());  // warm-up: first launches load modules, caches fill
    check(cudaStreamSynchronize(stream), "warm-up");
    std::vector<double> samples;
    for (int r = 0; r < repeats; ++r) {
      spin<<<1, 1, 0, stream>>>(spin_cycles);
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < calls; ++i) (void)(last = call());
      const auto stop = std::chrono::steady_clock::now();
      check(cudaStreamSynchronize(stream), name);
      samples.push_back(std::chrono::duration<double, std::micro>(stop - start).count() / calls);
    }
    std::sort(samples.begin(), samples.end());
    rows.push_back({name, samples[samples.size() / 2], samples.front(),
                    last ? std::string(note) : std::string("FAILED: ") + last.to_string()});
  };
  time("forward_auto", [&] { return attnkit::forward(args); }, "attnkit::forward, workspace given (runs sm90)");
  time("forward_allocating_auto",
       [&] { return attnkit::host::forward_allocating(args, attnkit::host::WorkspaceAllocator{}); },
       "the Python extension's entry (one plan), workspace given");
  time("forward_allocating_zeroed_workspace",
       [&] { return attnkit::host::forward_allocating(args_no_workspace, zeroed_allocator); },
       "the extension's entry with its zeroed per-stream buffer (sm90: no memset)");
  time("forward_sm80", [&] { return attnkit::forward(args_sm80); }, "backend sm80");
  time("part_can_implement", [&] { return attnkit::can_implement(args); },
       "validate + backend choice + workspace check");
  time("part_workspace_size", [&] { return attnkit::workspace_size(args, &workspace_bytes); },
       "validate + backend choice");
  time("part_refused_without_workspace",
       [&] {
         const Status s = attnkit::forward(args_no_workspace);
         return s.code() == attnkit::StatusCode::kWorkspaceTooSmall ? Status::ok() : s;
       },
       "forward() refused for lack of workspace (the extension's first attempt before this change)");
  time("part_validate", [&] { return attnkit::host::make_dense_problem(args, &problem); }, "make_dense_problem");
  time("part_sm90_supports", [&] { return attnkit::sm90::dense_supports_forward(problem, args); },
       "sm90 dense_supports_forward");
  time("part_sm90_run", [&] { return attnkit::sm90::dense_forward(problem, args); },
       "sm90 dense_forward: memset + 3 TMA descriptors + launch");
  time("part_sm90_run_zeroed_workspace", [&] { return attnkit::sm90::dense_forward(problem_zeroed, args_zeroed); },
       "sm90 dense_forward on a workspace known to be zero: 3 TMA descriptors + launch");
  time("floor_memset_async_4B", [&] { return cuda(cudaMemsetAsync(workspace, 0, 4, stream)); },
       "the tile counter reset");
  time("floor_empty_kernel_launch", [&] {
    empty_kernel<<<1, 1, 0, stream>>>();
    return cuda(cudaGetLastError());
  }, "no parameters");
  time("floor_empty_kernel_launch_768B_params", [&] {
    empty_kernel_large_params<<<1, 1, 0, stream>>>(LargeParams{});
    return cuda(cudaGetLastError());
  }, "a parameter block the size of the sm90 forward's");
  time("floor_driver_entry_point_lookup", [&] {
    void* pfn = nullptr;
    cudaDriverEntryPointQueryResult found;
    return cuda(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &pfn, 12000, cudaEnableDefault, &found));
  }, "CuTe asks it before each cuTensorMapEncodeTiled (3 per sm90 launch)");
  time("floor_tensor_map_encode", [&] {
    return encode_q() == CUDA_SUCCESS ? Status::ok() : Status{attnkit::StatusCode::kCudaError, "encode failed"};
  }, "cuTensorMapEncodeTiled, 4-D bf16 (3 per sm90 launch)");
  time("floor_cuda_get_device", [&] {
    int device = 0;
    return cuda(cudaGetDevice(&device));
  }, "");
  check(cudaDeviceSynchronize(), "final");

  std::printf("host time per call, %s, B=%lld S=%lld H=%lld D=%lld bf16 causal (median of %d batches of %d calls):\n",
              prop.name, static_cast<long long>(B), static_cast<long long>(S), static_cast<long long>(H),
              static_cast<long long>(D), repeats, calls);
  for (const Row& row : rows) {
    std::printf("  %-40s %8.3f us  (best batch %.3f)  %s\n", row.name.c_str(), row.median_us, row.best_us,
                row.note.c_str());
  }
  if (json_path != nullptr) {
    FILE* f = std::fopen(json_path, "w");
    if (f == nullptr) {
      std::perror(json_path);
      return 1;
    }
    std::fprintf(f, "{\"device\": \"%s\", \"commit\": \"%s\", \"tool\": \"attnkit_host_overhead\", \"rows\": [\n",
                 prop.name, commit);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      std::fprintf(f,
                   " {\"op\": \"dense_fwd_cpp_host_overhead\", \"impl\": \"%s\", \"us_per_call\": %.3f, "
                   "\"us_best_batch\": %.3f, \"calls\": %d, \"repeats\": %d, \"b\": %lld, \"sq\": %lld, \"sk\": %lld, "
                   "\"hq\": %lld, \"hkv\": %lld, \"d\": %lld, \"dv\": %lld, \"causal\": true, \"dtype\": \"bf16\", "
                   "\"note\": \"%s\"}%s\n",
                   rows[i].name.c_str(), rows[i].median_us, rows[i].best_us, calls, repeats,
                   static_cast<long long>(B), static_cast<long long>(S), static_cast<long long>(S),
                   static_cast<long long>(H), static_cast<long long>(H), static_cast<long long>(D),
                   static_cast<long long>(D), rows[i].note.c_str(), i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
}
