#include "common/counters.h"

#include <condition_variable>
#include <mutex>

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(RejectCounters, CountsByReasonAndExportsOneFieldPerReason) {
  RejectCounters rejected;
  rejected.Count(RejectReason::kParseError);
  rejected.Count(RejectReason::kParseError);
  rejected.Count(RejectReason::kTooLarge);
  EXPECT_EQ(rejected.value(RejectReason::kParseError), 2u);
  EXPECT_EQ(rejected.total(), 3u);
  nlohmann::json out;
  rejected.AppendTo(out);
  EXPECT_EQ(out.size(), kRejectReasonCount);
  EXPECT_EQ(out["rejected_parse_error"], 2);
  EXPECT_EQ(out["rejected_too_large"], 1);
  EXPECT_EQ(out["rejected_bad_version"], 0);
}

TEST(PeriodicTask, TicksRepeatedlyUntilDestroyed) {
  std::mutex mu;
  std::condition_variable cv;
  int ticks = 0;
  {
    PeriodicTask task(std::chrono::milliseconds(1), [&] {
      std::lock_guard<std::mutex> lock(mu);
      ++ticks;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return ticks >= 3; }));
  }
  std::lock_guard<std::mutex> lock(mu);
  int after_destruction = ticks;
  EXPECT_GE(after_destruction, 3);
}

TEST(PeriodicTask, ZeroIntervalNeverTicksAndDestroysPromptly) {
  int ticks = 0;
  { PeriodicTask task(std::chrono::milliseconds(0), [&] { ++ticks; }); }
  EXPECT_EQ(ticks, 0);
}

}  // namespace
}  // namespace sluice
