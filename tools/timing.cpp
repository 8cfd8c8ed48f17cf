#include "timing.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

#include "attnkit/build_config.h"

#if ATTNKIT_ENABLE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace attnkit::cli {

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

namespace {

Timing summarise(const std::vector<double>& ms) {
  Timing timing;
  timing.iterations = static_cast<int>(ms.size());
  if (ms.empty()) return timing;
  timing.median_ms = median(ms);
  timing.min_ms = *std::min_element(ms.begin(), ms.end());
  timing.max_ms = *std::max_element(ms.begin(), ms.end());
  return timing;
}

#if ATTNKIT_ENABLE_CUDA
void check_cuda(cudaError_t error, const char* what) {
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

// One event pair per timed call, all read after a single synchronisation at the end, so the host never
// stalls the GPU between calls.
std::vector<double> time_on_gpu(int warmup, int iterations, const std::function<void(int)>& call) {
  for (int i = 0; i < warmup; ++i) call(i);
  std::vector<cudaEvent_t> starts(iterations);
  std::vector<cudaEvent_t> stops(iterations);
  for (int i = 0; i < iterations; ++i) {
    check_cuda(cudaEventCreate(&starts[i]), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stops[i]), "cudaEventCreate");
  }
  for (int i = 0; i < iterations; ++i) {
    check_cuda(cudaEventRecord(starts[i], nullptr), "cudaEventRecord");
    call(warmup + i);
    check_cuda(cudaEventRecord(stops[i], nullptr), "cudaEventRecord");
  }
  check_cuda(cudaDeviceSynchronize(), "a timed launch failed (cudaDeviceSynchronize)");
  std::vector<double> ms(iterations);
  for (int i = 0; i < iterations; ++i) {
    float elapsed = 0.0f;
    check_cuda(cudaEventElapsedTime(&elapsed, starts[i], stops[i]), "cudaEventElapsedTime");
    ms[i] = elapsed;
    cudaEventDestroy(starts[i]);
    cudaEventDestroy(stops[i]);
  }
  return ms;
}
#endif

std::vector<double> time_on_cpu(int warmup, int iterations, const std::function<void(int)>& call) {
  for (int i = 0; i < warmup; ++i) call(i);
  std::vector<double> ms(iterations);
  for (int i = 0; i < iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    call(warmup + i);
    const auto stop = std::chrono::steady_clock::now();
    ms[i] = std::chrono::duration<double, std::milli>(stop - start).count();
  }
  return ms;
}

}  // namespace

Timing time_calls(Device device, int warmup, int iterations, const std::function<void(int)>& call) {
  if (device.kind == DeviceKind::kCPU) return summarise(time_on_cpu(warmup, iterations, call));
#if ATTNKIT_ENABLE_CUDA
  return summarise(time_on_gpu(warmup, iterations, call));
#else
  throw std::runtime_error("this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF): cannot time on a GPU");
#endif
}

}  // namespace attnkit::cli
