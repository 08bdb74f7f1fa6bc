#include "common/log.h"

#include <algorithm>
#include <sstream>

#include <google/protobuf/stubs/logging.h>

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
  auto now = std::chrono::steady_clock::time_point() + std::chrono::hours(1);
  RateLimitedLog limited("sink.out_of_range", std::chrono::seconds(1),
                         [&] { return now; });
  limited.Warn("first");
  limited.Warn("second");  // Within the interval: counted only.
  limited.Warn("third");
  now += std::chrono::milliseconds(999);
  limited.Warn("fourth");  // Still within it.
  EXPECT_EQ(log.text().find("second"), std::string::npos);
  now += std::chrono::milliseconds(1);
  limited.Warn("fifth");
  std::string text = log.text();
  EXPECT_NE(text.find("sink.out_of_range: first\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sink.out_of_range: fifth (and 3 more like it since the last line)"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("fourth"), std::string::npos);
  now += std::chrono::seconds(5);
  limited.Warn("sixth");  // Nothing was suppressed since the last line.
  EXPECT_NE(log.text().find("sink.out_of_range: sixth\n"), std::string::npos);
}

// libprotobuf's complaints go through one rate-limited line, not one line
// each (issue 8: 1,000 bad frames made 1,000 ERROR lines).
TEST(InitLogging, LibprotobufLinesAreRateLimited) {
  ASSERT_TRUE(InitLogging("sluice-test", "info").ok());
  CapturedLog log;
  for (int i = 0; i < 1000; ++i) {
    GOOGLE_LOG(ERROR) << "String field contains invalid UTF-8 data";
  }
  std::string text = log.text();
  EXPECT_NE(text.find("protobuf: String field contains invalid UTF-8"), std::string::npos)
      << text;
  size_t lines = std::count(text.begin(), text.end(), '\n');
  EXPECT_LE(lines, 2u) << text;
}

TEST(InitLogging, UnknownLevelIsAnInvalidArgument) {
  Status status = InitLogging("sluice-test", "loud");
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("loud"), std::string::npos);
}

}  // namespace
}  // namespace sluice
