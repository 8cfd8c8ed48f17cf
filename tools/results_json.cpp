#include "results_json.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace attnkit::cli {

std::string json_quote(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string json_number(double value) {
  if (!std::isfinite(value)) return "null";
  char text[64];
  const auto result = std::to_chars(text, text + sizeof(text), value);
  return std::string(text, result.ptr);
}

namespace {

std::string row_to_json(const ResultRow& row) {
  std::string out = "{";
  auto field = [&out](const std::string& key, const std::string& value) {
    if (out.size() > 1) out += ", ";
    out += json_quote(key) + ": " + value;
  };
  field("op", json_quote(row.op));
  field("impl", json_quote(row.impl));
  field("b", std::to_string(row.b));
  field("sq", std::to_string(row.sq));
  field("sk", std::to_string(row.sk));
  field("hq", std::to_string(row.hq));
  field("hkv", std::to_string(row.hkv));
  field("d", std::to_string(row.d));
  field("dv", std::to_string(row.dv));
  field("causal", row.causal ? "true" : "false");
  field("dtype", json_quote(row.dtype));
  field("ms", json_number(row.ms));
  field("tflops", json_number(row.tflops));
  field("backend", json_quote(row.backend));
  for (const auto& [key, value] : row.extra) field(key, value);
  return out + "}";
}

std::string file_safe(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? std::string("unknown") : out;
}

}  // namespace

std::string to_json(const ResultsFile& file) {
  std::string out = "{\n";
  out += "  \"device\": " + json_quote(file.device) + ",\n";
  out += "  \"commit\": " + json_quote(file.commit) + ",\n";
  out += "  \"date\": " + json_quote(file.date) + ",\n";
  out += "  \"command\": " + json_quote(file.command) + ",\n";
  out += "  \"rows\": [";
  for (std::size_t i = 0; i < file.rows.size(); ++i) {
    out += (i == 0 ? "\n    " : ",\n    ") + row_to_json(file.rows[i]);
  }
  out += file.rows.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return out;
}

std::string default_results_path(const std::string& results_dir, const std::string& device, const std::string& day,
                                 const std::string& commit) {
  const std::string stem = results_dir + "/" + file_safe(device) + "-" + day + "-" + file_safe(commit);
  std::string path = stem + ".json";
  for (int copy = 2; std::filesystem::exists(path); ++copy) path = stem + "-" + std::to_string(copy) + ".json";
  return path;
}

void write_results(const std::string& path, const ResultsFile& file) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code error;
  if (!parent.empty()) std::filesystem::create_directories(parent, error);
  if (error) throw std::runtime_error("cannot create " + parent.string() + ": " + error.message());
  std::ofstream stream(path);
  stream << to_json(file);
  stream.close();
  if (!stream) throw std::runtime_error("cannot write " + path);
}

}  // namespace attnkit::cli
