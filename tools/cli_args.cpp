#include "cli_args.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace attnkit::cli {

ParsedArgs::ParsedArgs(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::string value;
    bool has_inline_value = false;
    if (const std::size_t eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline_value = true;
    }
    if (name.rfind("-", 0) != 0) throw UsageError("unexpected argument '" + args[i] + "'");
    const auto spec = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
    if (spec == specs.end()) throw UsageError("unknown option '" + name + "' (see --help)");
    if (spec->value_name.empty()) {
      if (has_inline_value) throw UsageError("option " + name + " takes no value");
    } else if (!has_inline_value) {
      if (i + 1 >= args.size()) throw UsageError("option " + name + " needs a value " + spec->value_name);
      value = args[++i];
    }
    values_[name] = value;
  }
}

std::string ParsedArgs::get_string(const std::string& name, const std::string& fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::int64_t ParsedArgs::get_int(const std::string& name, std::int64_t fallback, std::int64_t min,
                                 std::int64_t max) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const std::string& text = it->second;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE) {
    throw UsageError(name + ": expected an integer, got '" + text + "'");
  }
  if (value < min || value > max) {
    throw UsageError(name + ": expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) +
                     "], got " + text);
  }
  return value;
}

double ParsedArgs::get_double(const std::string& name, double fallback, double min, double max) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const std::string& text = it->second;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(value)) {
    throw UsageError(name + ": expected a finite number, got '" + text + "'");
  }
  if (value < min || value > max) {
    throw UsageError(name + ": expected a number in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                     text);
  }
  return value;
}

std::string ParsedArgs::get_choice(const std::string& name, const std::string& fallback,
                                   const std::vector<std::string>& choices) const {
  const std::string value = get_string(name, fallback);
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return value;
  std::string list;
  for (const std::string& choice : choices) list += (list.empty() ? "" : "|") + choice;
  throw UsageError(name + ": expected one of " + list + ", got '" + value + "'");
}

std::string format_options(const std::vector<OptionSpec>& specs) {
  std::size_t width = 0;
  for (const OptionSpec& spec : specs) {
    width = std::max(width, spec.name.size() + (spec.value_name.empty() ? 0 : spec.value_name.size() + 1));
  }
  std::string text;
  for (const OptionSpec& spec : specs) {
    std::string left = spec.name + (spec.value_name.empty() ? "" : " " + spec.value_name);
    left.resize(width, ' ');
    text += "  " + left + "  " + spec.help + "\n";
  }
  return text;
}

Backend parse_backend(const std::string& text) {
  if (text == "cpu") return Backend::kCPU;
  if (text == "sm80") return Backend::kSm80;
  if (text == "sm90") return Backend::kSm90;
  if (text == "auto") return Backend::kAuto;
  throw UsageError("--backend: expected auto|cpu|sm80|sm90, got '" + text + "'");
}

DType parse_dtype(const std::string& text) {
  if (text == "bf16") return DType::kBFloat16;
  if (text == "fp16") return DType::kFloat16;
  throw UsageError("--dtype: expected bf16|fp16, got '" + text + "'");
}

}  // namespace attnkit::cli
