// common/config.h
//
// Configuration for every binary through Boost.Program_options, with one rule
// of precedence: command-line flags over SLUICE_<FLAG> environment variables
// (upper case, dashes as underscores: --idle-timeout -> SLUICE_IDLE_TIMEOUT)
// over a --config FILE (INI lines "flag = value", no dashes).
//
// Every binary has --help, --version, --config and --log-level. A usage error
// prints one line naming the problem, then a hint, on stderr; the caller
// exits 64.
#ifndef SLUICE_COMMON_CONFIG_H_
#define SLUICE_COMMON_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/program_options.hpp>

#include "common/endpoint.h"
#include "common/status.h"

namespace sluice {

namespace po = boost::program_options;

struct ProgramInfo {
  std::string name;     // "sluice-stage"
  std::string summary;  // One paragraph for --help, before the options.
};

// The project version, "0.1.0".
std::string_view SluiceVersion();

// Parses argv, the environment and the config file into `vm` (options
// registered in `options`, plus the common ones). Returns nullopt when the
// program should run, or the exit code to leave with: 0 after printing --help
// or --version to stdout, 64 after printing a usage error to stderr.
std::optional<int> ParseCommandLine(const ProgramInfo& info,
                                    const po::options_description& options,
                                    int argc, const char* const argv[],
                                    po::variables_map& vm);

// "10,5" -> {10, 5}. Each element must lie in [min, max]. The error names
// `flag` and the offending element.
StatusOr<std::vector<int64_t>> ParseIntList(std::string_view text,
                                            std::string_view flag,
                                            int64_t min, int64_t max);
// "token,result" -> {"token", "result"}; empty elements are an error.
StatusOr<std::vector<std::string>> ParseNameList(std::string_view text,
                                                 std::string_view flag);

// kInvalidArgument "--flag must be in [min, max], got value" unless in range.
Status CheckRange(std::string_view flag, int64_t value, int64_t min,
                  int64_t max);

// Reads typed, range-checked flag values out of a parsed variables_map and
// keeps the first error, so that a main() reads all its flags and checks
// once. After an error, getters return `min` (or zero), never throw.
class FlagReader {
 public:
  explicit FlagReader(const po::variables_map& vm) : vm_(vm) {}
  // An int64 flag in [min, max].
  int64_t Int(const char* flag, int64_t min, int64_t max);
  // A flag given in seconds (a double) in [min, max], as milliseconds;
  // with `exclusive_min`, the value must be above min.
  std::chrono::milliseconds Seconds(const char* flag, double min, double max,
                                    bool exclusive_min = false);
  // Endpoints of a flag, or none if its value is "off" and `may_be_off`.
  std::vector<Endpoint> Endpoints(const char* flag, Role default_role,
                                  bool may_be_off = false);
  // Records an error of the caller's own (first one wins).
  void Fail(Status status);
  const Status& status() const { return status_; }

 private:
  const po::variables_map& vm_;
  Status status_;
};

// Prints "<program>: <message>" and the --help hint to stderr; returns 64.
int ReportUsageError(std::string_view program, std::string_view message);

}  // namespace sluice

#endif  // SLUICE_COMMON_CONFIG_H_
