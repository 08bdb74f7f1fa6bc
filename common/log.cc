#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace sluice {

Status InitLogging(std::string_view program, std::string_view level) {
  spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return InvalidArgument("--log-level '" + std::string(level) +
                           "' is not one of trace, debug, info, warn, error, "
                           "off");
  }
  auto logger = spdlog::stderr_logger_mt(std::string(program));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n %l %v");
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  return Status::Ok();
}

void RateLimitedLog::Warn(std::string_view detail) {
  auto now = std::chrono::steady_clock::now();
  uint64_t suppressed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (last_ != std::chrono::steady_clock::time_point{} &&
        now - last_ < interval_) {
      ++suppressed_;
      return;
    }
    last_ = now;
    suppressed = suppressed_;
    suppressed_ = 0;
  }
  if (suppressed > 0) {
    spdlog::warn("{}: {} (and {} more like it since the last line)", id_,
                 detail, suppressed);
  } else {
    spdlog::warn("{}: {}", id_, detail);
  }
}

}  // namespace sluice
