// common/log.h
//
// Logging goes to stderr through spdlog, one line per event:
//   2026-11-22T01:02:03.456 sluice-stage warn rx.reject: ...
// Stdout is kept for the READY line, the human summary and --help output.
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
#include <mutex>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/status.h"

namespace sluice {

// Names the default logger after the program and sends it to stderr.
// `level` is one of trace, debug, info, warn, error, off.
Status InitLogging(std::string_view program, std::string_view level);

class RateLimitedLog {
 public:
  RateLimitedLog(std::string id, std::chrono::milliseconds interval)
      : id_(std::move(id)), interval_(interval) {}

  // Logs `detail` at warn level unless a line with this id went out less
  // than `interval` ago, in which case the event is only counted.
  void Warn(std::string_view detail);

 private:
  const std::string id_;
  const std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_{};  // Guarded by mu_.
  uint64_t suppressed_ = 0;                       // Guarded by mu_.
};

}  // namespace sluice

#endif  // SLUICE_COMMON_LOG_H_
