#include "common/log.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace sluice {
namespace {

// libprotobuf logs some problems with what it parses or serializes on its
// own, one stderr line per event. Those events come from peer input, so they
// go through one rate-limited line like every other wire complaint.
void ProtobufLog(google::protobuf::LogLevel level, const char* /*file*/,
                 int /*line*/, const std::string& message) {
  static RateLimitedLog log("protobuf", std::chrono::seconds(1));
  if (level >= google::protobuf::LOGLEVEL_FATAL) {
    spdlog::critical("protobuf: {}", message);
    return;
  }
  log.Warn(message);
}

}  // namespace

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
  google::protobuf::SetLogHandler(&ProtobufLog);
  return Status::Ok();
}

void RateLimitedLog::Warn(std::string_view detail) {
  auto now = now_();
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
