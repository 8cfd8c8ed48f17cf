// The subcommands of the attnkit tool. Each takes the arguments after its name, returns the process
// exit code (cli_args.h), and throws UsageError for a wrong command line.
#pragma once

#include <string>
#include <vector>

namespace attnkit::cli {

int run_command(const std::vector<std::string>& args);
// `attnkit run --op gdn|kda` (tools/linear_run.cpp); run_command hands such a command line over.
int run_linear_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args, const std::string& command_line);
int info_command(const std::vector<std::string>& args);

const char* run_usage();
const char* run_linear_usage();
const char* bench_usage();
const char* info_usage();

}  // namespace attnkit::cli
