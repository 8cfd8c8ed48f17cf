// The problem options shared by `attnkit run` and `attnkit bench` (sizes, mask, dtype, backend), read
// into the case catalogue's own type so that a hand-given problem and a catalogue case are one thing.
#pragma once

#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "cli_args.h"
#include "tests/cases/dense_cases.h"

namespace attnkit::cli {

// --b --s --sq --sk --h --hq --hkv --d --dv --causal --no-causal --window-left --window-right --softcap
// --sinks --dtype
std::vector<OptionSpec> problem_options();
// --backend
OptionSpec backend_option();

// True when any problem option is present (bench: they conflict with --suite).
bool has_problem_options(const ParsedArgs& args);

// The default problem is B=2, S=1024, H=16, D=128, causal, bf16; each option overrides its part.
cases::DenseCase case_from_args(const ParsedArgs& args);

// A file- and table-friendly name from the shape: "b2_sq1024_sk1024_hq16_hkv16_d128_causal_bf16".
std::string shape_name(const cases::DenseCase& c);

// Backend of --backend; UsageError on a bad value.
Backend backend_from_args(const ParsedArgs& args);

}  // namespace attnkit::cli
