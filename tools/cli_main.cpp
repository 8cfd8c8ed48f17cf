// attnkit: the command-line tool. `attnkit run`, `attnkit bench`, `attnkit info`; see --help.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "attnkit/types.h"
#include "cli_args.h"
#include "cli_commands.h"

namespace {

constexpr const char* kUsage =
    "usage: attnkit <command> [options]\n"
    "\n"
    "commands:\n"
    "  run     run one dense attention forward on the best backend present, check it against the\n"
    "          float64 reference and time it (default B=2, S=1024, H=16, D=128, causal, bf16)\n"
    "  bench   time a suite of cases (forward and backward) and write bench/results/<...>.json\n"
    "  info    build, compiled backends, CUDA devices, OpenMP threads, CPU vector features\n"
    "\n"
    "`attnkit <command> --help` lists a command's options. Exit codes: 0 ok, 1 a check or call failed,\n"
    "2 a wrong command line.\n";

// The command line as typed, for the results file ("command").
std::string join_command_line(int argc, char** argv) {
  std::string line;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.find_first_of(" \t\"'") != std::string::npos) arg = "'" + arg + "'";
    line += (i == 0 ? "" : " ") + arg;
  }
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace attnkit::cli;
  if (argc < 2) {
    std::fprintf(stderr, "%s", kUsage);
    return kExitUsage;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "--help" || command == "-h" || command == "help") {
    std::printf("%s", kUsage);
    return kExitOk;
  }
  try {
    if (command == "run") return run_command(args);
    if (command == "bench") return bench_command(args, join_command_line(argc, argv));
    if (command == "info") return info_command(args);
    throw UsageError("unknown command '" + command + "' (commands: run, bench, info; see attnkit --help)");
  } catch (const UsageError& error) {
    std::fprintf(stderr, "attnkit %s: %s\n", command.c_str(), error.what());
    return kExitUsage;
  } catch (const attnkit::Error& error) {
    std::fprintf(stderr, "attnkit %s: %s\n", command.c_str(), error.what());
    return kExitFailure;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "attnkit %s: %s\n", command.c_str(), error.what());
    return kExitFailure;
  }
}
