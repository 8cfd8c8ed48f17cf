// Throwaway device check of ForwardTileScheduler::work (heavy-first sections): for every configuration of
// a sweep, every (split, m_block, head, batch) must be hit exactly once, and within a section the m_block
// order must be non-increasing. Prints the number of configurations checked and of failures.
#include <cstdio>
#include <vector>
#include "kernels/dense/sm80/forward/forward_tile_scheduler.cuh"
using namespace attnkit::sm80;

__global__ void map_kernel(ForwardParams p, int n, int* hits, int* order_bad) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const ForwardWork w = ForwardTileScheduler::work(p, i);
  if (w.m_block < 0 || w.m_block >= p.num_m_blocks || w.head < 0 || w.head >= p.heads_q || w.batch < 0 ||
      w.batch >= p.batch || w.split < 0 || w.split >= p.num_splits) {
    atomicAdd(order_bad, 1);
    return;
  }
  const long long id = ((static_cast<long long>(w.batch) * p.heads_q + w.head) * p.num_m_blocks + w.m_block) *
                           p.num_splits + w.split;
  atomicAdd(&hits[id], 1);
  // Heavy-first within a section: the next linear index of the same section and split has m_block <=.
  if (p.heavy_first && i + p.num_splits < n) {
    const ForwardWork next = ForwardTileScheduler::work(p, i + p.num_splits);
    const int pair = w.batch * p.heads_q + w.head, next_pair = next.batch * p.heads_q + next.head;
    if (pair / p.section_pairs == next_pair / p.section_pairs && next.m_block > w.m_block) atomicAdd(order_bad, 1);
  }
}

int main() {
  int configs = 0, failures = 0;
  int *hits, *bad;
  cudaMalloc(&hits, sizeof(int) << 22);
  cudaMalloc(&bad, sizeof(int));
  std::vector<int> h(1 << 22);
  for (int batch : {1, 2, 3, 16}) for (int heads : {1, 5, 8, 32}) for (int m : {1, 7, 16, 64}) for (int splits : {1, 3})
    for (int hf : {0, 1}) for (int sect : {1, 2, 3, 7, 16, 1000}) {
      ForwardParams p;
      p.batch = batch; p.heads_q = heads; p.num_m_blocks = m; p.num_splits = splits; p.heavy_first = hf;
      p.section_pairs = sect < batch * heads ? sect : batch * heads;
      const int n = batch * heads * m * splits;
      cudaMemset(hits, 0, sizeof(int) * n);
      cudaMemset(bad, 0, sizeof(int));
      map_kernel<<<(n + 255) / 256, 256>>>(p, n, hits, bad);
      int b = 0;
      cudaMemcpy(h.data(), hits, sizeof(int) * n, cudaMemcpyDeviceToHost);
      cudaMemcpy(&b, bad, sizeof(int), cudaMemcpyDeviceToHost);
      bool ok = b == 0;
      for (int i = 0; i < n; ++i) ok = ok && h[i] == 1;
      ++configs;
      if (!ok) { ++failures; if (failures < 10) std::printf("FAIL b=%d h=%d m=%d splits=%d hf=%d sect=%d bad=%d\n", batch, heads, m, splits, hf, sect, b); }
    }
  const cudaError_t e = cudaDeviceSynchronize();
  std::printf("sched_check: %d configurations, %d failed, %s\n", configs, failures, cudaGetErrorString(e));
  return failures != 0 || e != cudaSuccess;
}
