#include "common/config.h"

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/exit_codes.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.0.0"
#endif

namespace sluice {
namespace {

// "SLUICE_IDLE_TIMEOUT" -> "idle-timeout" if such an option exists, else "".
std::string EnvToOption(const po::options_description& all,
                        const std::string& env_name) {
  static constexpr std::string_view kPrefix = "SLUICE_";
  if (env_name.rfind(kPrefix, 0) != 0) return "";
  std::string option = env_name.substr(kPrefix.size());
  for (char& c : option) {
    c = c == '_' ? '-' : static_cast<char>(std::tolower(c));
  }
  if (option == "help" || option == "version") return "";
  if (all.find_nothrow(option, false) == nullptr) return "";
  return option;
}

}  // namespace

std::string_view SluiceVersion() { return SLUICE_VERSION; }

int ReportUsageError(std::string_view program, std::string_view message) {
  std::cerr << program << ": " << message << "\nTry '" << program
            << " --help' for the flags.\n";
  return kExitUsage;
}

std::optional<int> ParseCommandLine(const ProgramInfo& info,
                                    const po::options_description& options,
                                    int argc, const char* const argv[],
                                    po::variables_map& vm) {
  po::options_description common("Common flags");
  common.add_options()
      ("help,h", "print this help and exit")
      ("version", "print the version and exit")
      ("config", po::value<std::string>(),
       "read flags from FILE (INI: 'flag = value'); flags and SLUICE_* "
       "environment variables take precedence")
      ("log-level", po::value<std::string>()->default_value("info"),
       "trace, debug, info, warn, error or off (logs go to stderr)")
      ("log-format", po::value<std::string>()->default_value("text"),
       "text: one readable line per event; json: one JSON object per line "
       "(ts, level, program, pid, msg; a counters line adds counters as an "
       "object), for log shippers");
  po::options_description all;
  all.add(options).add(common);

  try {
    po::parsed_options parsed = po::command_line_parser(argc, argv).options(all).run();
    // Program_options keeps a word that belongs to no flag as a nameless
    // "positional" option, and store() skips those: without this check a
    // stray word (a value left over after its flag, a forgotten "--") would
    // be ignored without a word.
    for (const po::option& option : parsed.options) {
      if (option.position_key < 0) continue;
      const std::string word = option.value.empty() ? "" : option.value.front();
      return ReportUsageError(
          info.name, "unexpected argument '" + word + "': " + info.name +
                         " takes no positional arguments (every value follows its "
                         "flag: --flag VALUE or --flag=VALUE; a list is one word, "
                         "comma-separated)");
    }
    po::store(parsed, vm);
    if (vm.count("help")) {
      std::cout << "Usage: " << info.name << " [flags]\n\n"
                << info.summary << "\n\n"
                << all << "\nEvery flag can also be set as SLUICE_<FLAG> in "
                   "the environment (--idle-timeout: SLUICE_IDLE_TIMEOUT) or in "
                   "a --config file.\nExit codes: 0 ok, 64 usage, 65 items failed (sink), 69 peer "
                   "unavailable, 70 internal, 75 incomplete.\n";
      return kExitOk;
    }
    if (vm.count("version")) {
      std::cout << info.name << " " << SluiceVersion() << "\n";
      return kExitOk;
    }
    po::store(po::parse_environment(
                  all, [&all](const std::string& env_name) {
                    return EnvToOption(all, env_name);
                  }),
              vm);
    if (vm.count("config")) {
      std::string path = vm["config"].as<std::string>();
      std::error_code ec;
      if (!std::filesystem::is_regular_file(path, ec)) {
        return ReportUsageError(info.name, "--config '" + path + "' is not a "
                                "readable file" +
                                (std::filesystem::is_directory(path, ec)
                                     ? " (it is a folder)" : ""));
      }
      std::ifstream file(path);
      if (!file) {
        return ReportUsageError(info.name,
                                "cannot read --config file '" + path + "'");
      }
      try {
        po::store(po::parse_config_file(file, all, false), vm);
      } catch (const po::error& e) {
        return ReportUsageError(info.name,
                                "in --config file '" + path + "': " + e.what());
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return ReportUsageError(info.name, e.what());
  }
  return std::nullopt;
}

StatusOr<std::vector<int64_t>> ParseIntList(std::string_view text,
                                            std::string_view flag,
                                            int64_t min, int64_t max) {
  StatusOr<std::vector<std::string>> parts = ParseNameList(text, flag);
  if (!parts.ok()) return parts.status();
  std::vector<int64_t> values;
  for (const std::string& part : *parts) {
    int64_t value = 0;
    auto [end, ec] =
        std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc() || end != part.data() + part.size()) {
      return InvalidArgument("--" + std::string(flag) + ": '" + part +
                             "' is not a whole number");
    }
    Status range = CheckRange(flag, value, min, max);
    if (!range.ok()) return range;
    values.push_back(value);
  }
  return values;
}

StatusOr<std::vector<std::string>> ParseNameList(std::string_view text,
                                                 std::string_view flag) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t comma = text.find(',', start);
    std::string_view part = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos
                                               : comma - start);
    if (part.empty()) {
      return InvalidArgument("--" + std::string(flag) + " '" +
                             std::string(text) + "' has an empty element");
    }
    parts.emplace_back(part);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return parts;
}

void FlagReader::Fail(Status status) {
  if (status_.ok()) status_ = std::move(status);
}

int64_t FlagReader::Int(const char* flag, int64_t min, int64_t max) {
  int64_t value = vm_[flag].as<int64_t>();
  Status range = CheckRange(flag, value, min, max);
  if (!range.ok()) {
    Fail(range);
    return min;
  }
  return value;
}

std::chrono::milliseconds FlagReader::Seconds(const char* flag, double min,
                                              double max, bool exclusive_min) {
  double seconds = vm_[flag].as<double>();
  bool above = exclusive_min ? seconds > min : seconds >= min;
  if (!(above && seconds <= max)) {
    Fail(InvalidArgument("--" + std::string(flag) + " must be in " +
                         (exclusive_min ? "(" : "[") +
                         std::to_string(static_cast<int64_t>(min)) + ", " +
                         std::to_string(static_cast<int64_t>(max)) +
                         "] seconds, got " + std::to_string(seconds)));
    return std::chrono::milliseconds(0);
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

std::vector<Endpoint> FlagReader::Endpoints(const char* flag, Role default_role,
                                            bool may_be_off) {
  std::string spec = vm_[flag].as<std::string>();
  if (may_be_off && spec == "off") return {};
  StatusOr<std::vector<Endpoint>> parsed = ParseEndpoints(spec, default_role);
  if (!parsed.ok()) {
    Fail(InvalidArgument("--" + std::string(flag) + ": " +
                         parsed.status().message()));
    return {};
  }
  return std::move(parsed).value();
}

Status CheckRange(std::string_view flag, int64_t value, int64_t min,
                  int64_t max) {
  if (value < min || value > max) {
    return InvalidArgument("--" + std::string(flag) + " must be in [" +
                           std::to_string(min) + ", " + std::to_string(max) +
                           "], got " + std::to_string(value));
  }
  return Status::Ok();
}

}  // namespace sluice
