#include "common/log.h"

#include <sstream>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

namespace sluice {
namespace {

// Captures what spdlog's default logger prints while it lives.
class CapturedLog {
 public:
  CapturedLog() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return stream_.str();
  }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST(RateLimitedLog, LogsTheFirstOfABurstAndCountsTheRest) {
  CapturedLog log;
  RateLimitedLog limited("rx.reject", std::chrono::hours(1));
  limited.Warn("dropped a 9-byte frame: parse_error");
  limited.Warn("dropped a 9-byte frame: parse_error");
  limited.Warn("dropped a 9-byte frame: parse_error");
  std::string text = log.text();
  EXPECT_NE(text.find("rx.reject: dropped a 9-byte frame: parse_error"), std::string::npos);
  EXPECT_EQ(text.find("rx.reject"), text.rfind("rx.reject")) << text;  // One line.
}

TEST(RateLimitedLog, NextLineAfterTheIntervalReportsHowManyWereSuppressed) {
  CapturedLog log;
  RateLimitedLog limited("sink.out_of_range", std::chrono::milliseconds(0));
  limited.Warn("first");
  limited.Warn("second");  // Interval 0: every event gets out.
  std::string text = log.text();
  EXPECT_NE(text.find("first"), std::string::npos);
  EXPECT_NE(text.find("second"), std::string::npos);
}

TEST(InitLogging, UnknownLevelIsAnInvalidArgument) {
  Status status = InitLogging("sluice-test", "loud");
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("loud"), std::string::npos);
}

}  // namespace
}  // namespace sluice
