#include "common/counters.h"

#include <condition_variable>
#include <filesystem>
#include <iterator>
#include <mutex>

#include <gtest/gtest.h>

namespace sluice {
namespace {

// Threads of this process, from /proc.
size_t ThreadCount() {
  return static_cast<size_t>(std::distance(
      std::filesystem::directory_iterator("/proc/self/task"),
      std::filesystem::directory_iterator()));
}

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
  const size_t threads_before = ThreadCount();
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
  EXPECT_GE(ticks, 3);
  // The destructor joined its thread: nothing can tick any more.
  EXPECT_EQ(ThreadCount(), threads_before);
}

TEST(PeriodicTask, ZeroIntervalStartsNoThreadAndNeverTicks) {
  int ticks = 0;
  const size_t threads_before = ThreadCount();
  {
    PeriodicTask task(std::chrono::milliseconds(0), [&] { ++ticks; });
    // No thread, so nothing can ever call the task.
    EXPECT_EQ(ThreadCount(), threads_before);
  }
  EXPECT_EQ(ticks, 0);
}

// Destruction wakes the thread instead of waiting out its interval: were it
// to wait, this test would outlast its ctest timeout by a day.
TEST(PeriodicTask, DestructionEndsTheThreadWithoutWaitingOutTheInterval) {
  int ticks = 0;
  const size_t threads_before = ThreadCount();
  {
    PeriodicTask task(std::chrono::hours(24), [&] { ++ticks; });
    EXPECT_EQ(ThreadCount(), threads_before + 1);
  }
  EXPECT_EQ(ThreadCount(), threads_before);
  EXPECT_EQ(ticks, 0);
}

}  // namespace
}  // namespace sluice
