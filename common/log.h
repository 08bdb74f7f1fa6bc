// common/log.h
//
// Logging goes to stderr through spdlog, one line per event:
//   2026-11-22T01:02:03.456 sluice-stage warn rx.reject: ...
// or, with --log-format json, one JSON object per line with stable names:
//   {"ts":"2026-11-22T01:02:03.456Z","level":"warn","program":"sluice-stage",
//    "pid":7,"msg":"rx.reject: ..."}
// A "counters {...}" line carries its counters as an object as well
// ("counters": {...}), so that a log shipper needs no second parse.
// Stdout is kept for the READY line, the human summary and --help output.
//
// libprotobuf's own log lines (InitLogging installs the handler) go through
// one RateLimitedLog too: bad input never floods the log from a library.
//
// RateLimitedLog keeps wire noise from flooding the log: the first event of a
// burst is logged at once with its stable id; further events within
// `interval` are only counted and reported in the next line that gets out.
//
// Thread safety: spdlog's logger is thread-safe; so is RateLimitedLog.
#ifndef SLUICE_COMMON_LOG_H_
#define SLUICE_COMMON_LOG_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/status.h"

namespace sluice {

// Names the default logger after the program and sends it to stderr.
// `level` is one of trace, debug, info, warn, error, off; `format` text or
// json. kInvalidArgument (naming the flag) for anything else.
Status InitLogging(std::string_view program, std::string_view level,
                   std::string_view format = "text");

class RateLimitedLog {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // `now` is for tests; by default the steady clock.
  RateLimitedLog(std::string id, std::chrono::milliseconds interval,
                 Clock now = &std::chrono::steady_clock::now)
      : id_(std::move(id)), interval_(interval), now_(std::move(now)) {}

  // Logs `detail` at warn level unless a line with this id went out less
  // than `interval` ago, in which case the event is only counted.
  void Warn(std::string_view detail);

 private:
  const std::string id_;
  const std::chrono::milliseconds interval_;
  const Clock now_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_{};  // Guarded by mu_.
  uint64_t suppressed_ = 0;                       // Guarded by mu_.
};

}  // namespace sluice

#endif  // SLUICE_COMMON_LOG_H_
