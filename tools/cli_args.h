// Command-line parsing for the attnkit tool: each subcommand declares its options once (name, value
// placeholder, help line) and reads them back typed. Every mistake a user can make is a UsageError,
// which main() turns into a message plus exit code 2.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "attnkit/types.h"

namespace attnkit::cli {

// Exit codes of every subcommand.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // ran, but a check failed or the library returned an error
constexpr int kExitUsage = 2;    // the command line is wrong

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OptionSpec {
  std::string name;        // "--s"
  std::string value_name;  // "N"; empty for a flag that takes no value
  std::string help;
};

// A parsed command line: option names mapped to their (last) value; flags map to "".
class ParsedArgs {
 public:
  // Throws UsageError on an unknown option, a missing value, or a positional argument.
  ParsedArgs(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs);

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string get_string(const std::string& name, const std::string& fallback) const;
  // Integers must parse completely and lie in [min, max].
  std::int64_t get_int(const std::string& name, std::int64_t fallback, std::int64_t min, std::int64_t max) const;
  double get_double(const std::string& name, double fallback, double min, double max) const;
  // A value out of `choices`, or UsageError listing them.
  std::string get_choice(const std::string& name, const std::string& fallback,
                         const std::vector<std::string>& choices) const;

 private:
  std::map<std::string, std::string> values_;
};

std::string format_options(const std::vector<OptionSpec>& specs);

Backend parse_backend(const std::string& text);  // auto|cpu|sm80|sm90, after get_choice
DType parse_dtype(const std::string& text);      // bf16|fp16, after get_choice

}  // namespace attnkit::cli
