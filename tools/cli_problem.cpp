#include "cli_problem.h"

#include <cstdio>
#include <limits>

namespace attnkit::cli {

namespace {
// Sizes the tool accepts from the command line: large enough for any real problem, small enough that a
// product of a few of them cannot overflow int64 (2^24 each; memory runs out long before).
constexpr std::int64_t kMaxExtent = std::int64_t{1} << 24;
}  // namespace

std::vector<OptionSpec> problem_options() {
  return {
      {"--b", "N", "batch size (default 2)"},
      {"--s", "N", "sequence length of queries and keys (default 1024)"},
      {"--sq", "N", "query length (overrides --s)"},
      {"--sk", "N", "key length (overrides --s)"},
      {"--h", "N", "heads of queries and keys/values (default 16)"},
      {"--hq", "N", "query heads (overrides --h)"},
      {"--hkv", "N", "key/value heads (overrides --h); --hq must be a multiple"},
      {"--d", "N", "head dim of q/k and v (default 128)"},
      {"--dv", "N", "head dim of v/o (overrides --d)"},
      {"--causal", "", "causal mask, bottom-right aligned (the default)"},
      {"--no-causal", "", "no causal mask"},
      {"--window-left", "N", "sliding window: keys visible left of the diagonal (-1 = unbounded)"},
      {"--window-right", "N", "sliding window: keys visible right of the diagonal (needs --no-causal)"},
      {"--softcap", "C", "logit softcap c > 0 (default off)"},
      {"--sinks", "", "per-head attention sink logits (random, fp32)"},
      {"--dtype", "T", "bf16 (default) or fp16"},
  };
}

OptionSpec backend_option() {
  return {"--backend", "B",
          "auto (default: the GPU's best backend when there is a GPU, else the CPU) | cpu | sm80 | sm90"};
}

bool has_problem_options(const ParsedArgs& args) {
  for (const OptionSpec& spec : problem_options()) {
    if (args.has(spec.name)) return true;
  }
  return false;
}

cases::DenseCase case_from_args(const ParsedArgs& args) {
  if (args.has("--causal") && args.has("--no-causal"))
    throw UsageError("--causal and --no-causal contradict each other");
  cases::DenseCase c;
  c.batch = args.get_int("--b", 2, 0, kMaxExtent);
  const std::int64_t s = args.get_int("--s", 1024, 0, kMaxExtent);
  c.seqlen_q = args.get_int("--sq", s, 0, kMaxExtent);
  c.seqlen_k = args.get_int("--sk", s, 0, kMaxExtent);
  const std::int64_t h = args.get_int("--h", 16, 0, kMaxExtent);
  c.heads_q = args.get_int("--hq", h, 0, kMaxExtent);
  c.heads_kv = args.get_int("--hkv", h, 0, kMaxExtent);
  c.head_dim = args.get_int("--d", 128, 1, kMaxExtent);
  c.head_dim_v = args.get_int("--dv", c.head_dim, 1, kMaxExtent);
  c.causal = !args.has("--no-causal");
  c.window_left = args.get_int("--window-left", -1, -1, kMaxExtent);
  c.window_right = args.get_int("--window-right", -1, -1, kMaxExtent);
  if (c.causal && c.window_right != -1) {
    throw UsageError("--window-right with a causal mask: causal already means window right = 0; add --no-causal");
  }
  c.softcap = static_cast<float>(args.get_double("--softcap", 0.0, 0.0, std::numeric_limits<float>::max()));
  c.sinks = args.has("--sinks");
  c.dtype = parse_dtype(args.get_choice("--dtype", "bf16", {"bf16", "fp16"}));
  if (c.heads_kv > 0 && c.heads_q % c.heads_kv != 0) {
    throw UsageError("--hq " + std::to_string(c.heads_q) + " is not a multiple of --hkv " + std::to_string(c.heads_kv));
  }
  if (c.heads_kv == 0 && c.heads_q != 0) throw UsageError("--hkv 0 needs --hq 0");
  c.name = shape_name(c);
  return c;
}

std::string shape_name(const cases::DenseCase& c) {
  std::string name;
  auto part = [&name](const char* key, std::int64_t value) {
    if (!name.empty()) name += '_';
    name += key;
    name += std::to_string(value);
  };
  part("b", c.batch);
  part("sq", c.seqlen_q);
  part("sk", c.seqlen_k);
  part("hq", c.heads_q);
  part("hkv", c.heads_kv);
  part("d", c.head_dim);
  if (c.head_dim_v != c.head_dim) part("dv", c.head_dim_v);
  if (c.causal) name += "_causal";
  if (c.window_left >= 0 || c.window_right >= 0) {
    part("wl", c.window_left);
    part("wr", c.window_right);
  }
  if (c.softcap > 0.0f) {
    char softcap[32];
    std::snprintf(softcap, sizeof(softcap), "_softcap%g", static_cast<double>(c.softcap));
    name += softcap;
  }
  if (c.sinks) name += "_sinks";
  name += '_';
  name += dtype_name(c.dtype);
  return name;
}

Backend backend_from_args(const ParsedArgs& args) {
  return parse_backend(args.get_choice("--backend", "auto", {"auto", "cpu", "sm80", "sm90"}));
}

}  // namespace attnkit::cli
