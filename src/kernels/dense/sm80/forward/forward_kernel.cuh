// The sm80 dense forward kernel, assembled as Kernel<Mainloop, Epilogue, TileScheduler>
// (architecture.md, convention 1), and the launch that forward_instance_*.cu instantiate.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include <cute/tensor.hpp>

#include "device/kernel_attributes.cuh"
#include "device/mask_policy.cuh"
#include "device/online_softmax.cuh"
#include "kernels/dense/sm80/forward/forward_config.cuh"
#include "kernels/dense/sm80/forward/forward_epilogue_sm80.cuh"
#include "kernels/dense/sm80/forward/forward_mainloop_sm80.cuh"
#include "kernels/dense/sm80/forward/forward_tile_scheduler.cuh"

namespace attnkit::sm80 {

template <class Config, class Mainloop, class Epilogue, class TileScheduler>
struct DenseForwardKernel {
  static constexpr int kThreads = Config::kThreads;
  static constexpr int kSmemBytes = Config::kSmemBytes;
  static constexpr int kBlockM = Config::kBlockM;
  // Rows of the score tile each thread holds: 2 per m16 atom row block.
  static constexpr int kRowsPerThread = 2 * (kBlockM / (16 * Config::kWarps));

  __device__ void operator()(const ForwardParams& p, char* smem) const {
    using namespace cute;
    const ForwardWork work = TileScheduler::work(p, static_cast<int>(blockIdx.x));
    const SequenceSpan seq = sequence_span(p, work.batch);
    const int row_begin = work.m_block * kBlockM;
    // Varlen: the grid covers max_seqlen_q rows; shorter sequences have nothing in this tile.
    if (row_begin >= seq.seqlen_q) return;

    const device::WindowMask mask{seq.seqlen_q, seq.seqlen_k, p.window_left, p.window_right};
    const device::TileRange tiles = split_tiles(
        mask.template key_tiles<Config::kBlockN>(row_begin, row_begin + kBlockM), work.split, p.num_splits);

    typename Config::TiledMma mma;
    Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<Config::kHeadDimV>>{});  // (MMA, MMA_M, MMA_Dv)
    clear(acc_o);
    device::OnlineSoftmax<kRowsPerThread> softmax(p.softmax_scale_log2);
    Mainloop::run(p, seq, work.m_block, work.head, tiles, mask, smem, acc_o, softmax);
    float lse[kRowsPerThread];
    Epilogue::store(p, seq, work, acc_o, softmax, lse, smem);
  }
};

template <class Kernel>
__global__ void __launch_bounds__(Kernel::kThreads)
    dense_forward_sm80_kernel(const __grid_constant__ ForwardParams params) {
  extern __shared__ __align__(128) char shared_memory[];
  Kernel{}(params, shared_memory);
}

template <int kShapeIndex, DType kDType>
Status launch_dense_forward(const ForwardParams& params, void* stream) {
  using Config = ForwardConfig<kShapeIndex, kDType>;
  using Kernel = DenseForwardKernel<Config, ForwardMainloopSm80<Config>, ForwardEpilogueSm80<Config>,
                                    ForwardTileScheduler>;
  constexpr auto kernel = &dense_forward_sm80_kernel<Kernel>;
  cudaError_t error = device::ensure_dynamic_shared_memory<kernel>(Kernel::kSmemBytes);
  if (error == cudaSuccess) {
    const auto blocks = static_cast<unsigned>(ForwardTileScheduler::grid_size(params));
    kernel<<<blocks, Kernel::kThreads, Kernel::kSmemBytes, static_cast<cudaStream_t>(stream)>>>(params);
    error = cudaGetLastError();
  }
  if (error != cudaSuccess) {
    return {StatusCode::kCudaError, std::string("sm80 dense forward launch: ") + cudaGetErrorString(error)};
  }
  return Status::ok();
}

}  // namespace attnkit::sm80
