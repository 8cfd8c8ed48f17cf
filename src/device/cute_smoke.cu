#include <cute/tensor.hpp>

#include "device/cute_smoke.h"

namespace attnkit::device {
namespace {

using Size = cute::Int<kCuteSmokeSize>;

__global__ void cute_smoke_gemm_kernel(const cute::bfloat16_t* a, const cute::bfloat16_t* b, float* c) {
  using namespace cute;
  Tensor m_a = make_tensor(make_gmem_ptr(a), make_layout(make_shape(Size{}, Size{}), LayoutRight{}));  // (M, K)
  Tensor m_b = make_tensor(make_gmem_ptr(b), make_layout(make_shape(Size{}, Size{}), LayoutRight{}));  // (N, K)
  Tensor m_c = make_tensor(make_gmem_ptr(c), make_layout(make_shape(Size{}, Size{}), LayoutRight{}));  // (M, N)
  // 2 x 2 warps of 16x8x16 atoms: 128 threads cover a 32 x 16 tile, repeated over 64 x 64.
  TiledMMA mma = make_tiled_mma(SM80_16x8x16_F32BF16BF16F32_TN{}, Layout<Shape<_2, _2, _1>>{});
  ThrMMA thread_mma = mma.get_slice(threadIdx.x);
  Tensor a_frag = thread_mma.partition_fragment_A(m_a);  // (MMA, MMA_M, MMA_K)
  Tensor b_frag = thread_mma.partition_fragment_B(m_b);  // (MMA, MMA_N, MMA_K)
  Tensor c_frag = thread_mma.partition_fragment_C(m_c);  // (MMA, MMA_M, MMA_N)
  copy(thread_mma.partition_A(m_a), a_frag);
  copy(thread_mma.partition_B(m_b), b_frag);
  clear(c_frag);
  gemm(mma, a_frag, b_frag, c_frag);
  copy(c_frag, thread_mma.partition_C(m_c));
}

Status cuda_status(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::ok();
  return {StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(error)};
}

}  // namespace

Status cute_smoke_gemm(const void* a, const void* b, float* c) {
  cute_smoke_gemm_kernel<<<1, 128>>>(static_cast<const cute::bfloat16_t*>(a),
                                     static_cast<const cute::bfloat16_t*>(b), c);
  if (Status s = cuda_status(cudaGetLastError(), "cute_smoke_gemm launch"); !s) return s;
  return cuda_status(cudaDeviceSynchronize(), "cute_smoke_gemm");
}

}  // namespace attnkit::device
