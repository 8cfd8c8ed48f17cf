// The benchmark results file of gpu-workflow.md, written by the benchmark run itself:
//   {"device", "commit", "date", "command", "rows": [ROW, ...]}
// ROW: op, impl, b, sq, sk, hq, hkv, d, dv, causal, dtype, ms (median), tflops, backend, plus the keys
// of `extra` (numbers or strings) for whatever else a row needs to say.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace attnkit::cli {

struct ResultRow {
  std::string op;    // "dense_fwd", "dense_bwd"
  std::string impl;  // "attnkit"
  std::int64_t b = 0, sq = 0, sk = 0, hq = 0, hkv = 0, d = 0, dv = 0;
  bool causal = false;
  std::string dtype;                         // "bf16"
  double ms = 0.0;                           // median
  double tflops = 0.0;                       // field convention (dense_bwd: 2.5x the forward FLOPs)
  std::string backend;                       // "cpu", "sm80", "sm90"
  std::map<std::string, std::string> extra;  // key -> JSON value text (already encoded)
};

struct ResultsFile {
  std::string device;
  std::string commit;
  std::string date;  // UTC, ISO 8601
  std::string command;
  std::vector<ResultRow> rows;
};

std::string json_quote(const std::string& text);  // a JSON string literal, quotes included
std::string json_number(double value);            // shortest round-tripping form; non-finite -> null
std::string to_json(const ResultsFile& file);

// bench/results/<device>-<date>-<short commit>.json under `results_dir`, with the device name made
// file-safe ("NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"). A file of that name from an earlier
// run is never overwritten: "-2", "-3", ... is appended instead.
std::string default_results_path(const std::string& results_dir, const std::string& device, const std::string& day,
                                 const std::string& commit);

// Writes the file (creating its folder); throws std::runtime_error on failure.
void write_results(const std::string& path, const ResultsFile& file);

}  // namespace attnkit::cli
