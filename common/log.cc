#include "common/log.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/pattern_formatter.h>
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

// Appends `text` as the inside of a JSON string.
void AppendJsonEscaped(std::string_view text, spdlog::memory_buf_t& dest) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': dest.append(std::string_view("\\\"")); break;
      case '\\': dest.append(std::string_view("\\\\")); break;
      case '\n': dest.append(std::string_view("\\n")); break;
      case '\r': dest.append(std::string_view("\\r")); break;
      case '\t': dest.append(std::string_view("\\t")); break;
      default:
        if (c < 0x20) {
          const char escaped[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          dest.append(escaped, escaped + sizeof(escaped));
        } else {
          dest.push_back(ch);  // UTF-8 passes as it is.
        }
    }
  }
}

// %j: the message as a JSON string value, followed by "counters":{...} for
// a counters line (its payload is JSON already, made by nlohmann::json).
class JsonMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string_view text(msg.payload.data(), msg.payload.size());
    constexpr std::string_view kCounters = "counters {";
    dest.push_back('"');
    if (text.starts_with(kCounters) && text.ends_with('}')) {
      dest.append(std::string_view("counters\",\"counters\":"));
      dest.append(text.substr(kCounters.size() - 1));
      return;
    }
    AppendJsonEscaped(text, dest);
    dest.push_back('"');
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessage>();
  }
};

}  // namespace

Status InitLogging(std::string_view program, std::string_view level,
                   std::string_view format) {
  if (format != "text" && format != "json") {
    return InvalidArgument("--log-format '" + std::string(format) +
                           "' is not text or json");
  }
  spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return InvalidArgument("--log-level '" + std::string(level) +
                           "' is not one of trace, debug, info, warn, error, "
                           "off");
  }
  auto logger = spdlog::stderr_logger_mt(std::string(program));
  if (format == "json") {
    auto formatter =
        std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    // Program names are ours ("sluice-stage"): nothing to escape.
    formatter->add_flag<JsonMessage>('j').set_pattern(
        "{\"ts\":\"%Y-%m-%dT%H:%M:%S.%eZ\",\"level\":\"%l\",\"program\":\"%n\","
        "\"pid\":%P,\"msg\":%j}");
    logger->set_formatter(std::move(formatter));
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n %l %v");
  }
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
