// Device-ready parameters of the sm80 linear-attention kernels (GDN, KDA): raw pointers, element strides
// (64-bit: B * T * heads * dim passes 2^31 at B = 8, T = 65536, HV = 64, V = 128), sizes and flags.
// Filled from a validated host::LinearProblem by linear_sm80.cu; nothing here is checked again.
#pragma once

#include <cstdint>

namespace attnkit::sm80 {

// Element types of the tensors a kernel reads at run time (g, beta, and the decode kernel's q/k/v/out).
enum class LinearElement : std::uint8_t { kFloat32, kFloat16, kBFloat16 };

enum class LinearGate : std::uint8_t { kLogDecay, kSoftplus, kLowerBoundSigmoid };
enum class LinearBeta : std::uint8_t { kValue, kSigmoid, kTwoSigmoid };

// A token-major tensor [B, T, heads, dim] (dim contiguous) or [B, T, heads].
struct LinearTokenTensor {
  const void* data = nullptr;
  std::int64_t batch_stride = 0;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;
};

// A state tensor [N or P, HV, rows, cols] (cols contiguous).
struct LinearStateTensor {
  float* data = nullptr;
  std::int64_t sequence_stride = 0;
  std::int64_t head_stride = 0;
  std::int64_t row_stride = 0;
};

// What every linear kernel reads: shapes, the fused options and the per-token inputs.
struct LinearCommonParams {
  LinearTokenTensor q, k, v, g, beta;
  LinearTokenTensor out;  // strides of out; its pointer is out_data (written)
  void* out_data = nullptr;
  const float* A_log = nullptr;    // [HV], fused gate only
  const float* dt_bias = nullptr;  // [HV] (GDN) or [HV, K] (KDA); null = 0
  LinearElement io_element = LinearElement::kBFloat16;  // q, k, v, out
  LinearElement gate_element = LinearElement::kFloat32;
  LinearElement beta_element = LinearElement::kFloat32;
  LinearGate gate = LinearGate::kLogDecay;
  LinearBeta beta_form = LinearBeta::kValue;
  float gate_lower_bound = -5.0f;
  float scale = 1.0f;
  bool l2norm_qk = false;
  bool per_key_gate = false;  // KDA: g [.., HV, K]; GDN: g [.., HV]
  bool state_vk = false;      // states stored [V, K] instead of [K, V]
  int heads_v = 0;            // HV
  int group = 1;              // G = HV / H
  int key_dim = 0;            // K
  int value_dim = 0;          // V
};

struct LinearDecodeParams {
  LinearCommonParams common;
  LinearStateTensor state;             // [P, HV, K, V] or [P, HV, V, K], read and written in place
  const std::int32_t* state_indices = nullptr;  // [N] or null (sequence n owns state[n])
  std::int64_t state_indices_stride = 1;
  std::int64_t state_pool = 0;         // P
  int num_sequences = 0;               // N
  int tokens = 0;                      // T per sequence
};

// Intermediates of the chunk-parallel GDN and KDA forwards, per chunk slot s and value head hv (64-bit offsets
// ((s * HV + hv) * rows + row) * cols + col). A slot is one 64-token chunk of one sequence: sequence n,
// chunk c sits at slot n * ceil(T / 64) + c (fixed length) or cu_seqlens[n] / 64 + n + c (varlen, fewer
// than T / 64 + N slots; some stay unused).
struct LinearChunkWorkspace {
  void* w_neg = nullptr;   // Element [slots][HV][64][128]: -T_beta (k Gamma)
  void* key = nullptr;     // Element [slots][HV][64][128]: k (L2-normalised where asked); KDA: the hi part
                           // of k exp(G_last - G), the state update's operand
  float* u = nullptr;      // fp32 [slots][HV][64][value_pad]: T_beta v
  float* gate = nullptr;   // fp32 [slots][HV][64]: G, the inclusive cumulative log decay in the chunk (GDN)
  void* h = nullptr;       // Element [slots][HV][128][value_pad]: the state at the chunk's start
  void* v_new = nullptr;     // Element [slots][HV][64][value_pad]: v_new = u - w h, hi part (split_element)
  void* v_new_lo = nullptr;  // Element, same shape: its lo part
  // KDA only (per-key decay):
  void* key_lo = nullptr;  // Element [slots][HV][64][128]: the lo part of `key`
  void* query = nullptr;   // Element [slots][HV][64][128]: scale q Gamma (L2 factor applied)
  void* p = nullptr;       // Element [slots][HV][64][64]: P with its mask, decays and scale, hi part
  void* p_lo = nullptr;    // Element, same shape: its lo part
  float* decay = nullptr;  // fp32 [slots][HV][128]: exp(G_last), the chunk's decay of each key row of S
  std::int64_t slots = 0;
  int value_pad = 0;       // V rounded up to 64
};

struct LinearForwardParams {
  LinearCommonParams common;
  LinearChunkWorkspace chunk;
  LinearStateTensor initial_state;  // data null: zero state
  LinearStateTensor final_state;    // data null: not requested
  const std::int32_t* cu_seqlens = nullptr;  // [N + 1] for varlen, else null
  std::int64_t cu_seqlens_stride = 1;
  int num_sequences = 0;            // N
  std::int64_t seqlen = 0;          // T of each sequence (fixed length) or of the packed batch (varlen)
  bool vectorized_io = false;       // q/k/v/out rows 16-byte aligned with K and V multiples of 8
};

}  // namespace attnkit::sm80
