#include "producer/inflight_window.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

using Clock = InflightWindow::Clock;
using std::chrono::milliseconds;

Item DataItem(uint64_t seq) {
  Item item;
  item.stream = "s";
  item.seq = seq;
  item.payload = "p" + std::to_string(seq);
  return item;
}

AckMessage AckOf(uint64_t begin, uint64_t end, bool eos = false) {
  AckMessage ack;
  ack.stream = "s";
  ack.ranges.emplace_back(begin, end);
  ack.end_of_stream = eos;
  return ack;
}

RetransmitOptions Options() {
  RetransmitOptions o;
  o.initial_rto = milliseconds(1000);
  o.min_rto = milliseconds(200);
  o.max_rto = milliseconds(8000);
  return o;
}

TEST(InflightWindow, RoomIsTheSpanFromTheLowestUnackedSeq) {
  InflightWindow w(4, Options());
  const auto t0 = Clock::now();
  for (uint64_t s = 0; s < 4; ++s) w.Add(DataItem(s), t0);
  EXPECT_EQ(w.room(), 0u);
  // Acking 1..3 leaves 0 outstanding: the span, not the count, is full.
  w.Ack(AckOf(1, 4), t0 + milliseconds(10));
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.room(), 0u);
  w.Ack(AckOf(0, 1), t0 + milliseconds(20));
  EXPECT_EQ(w.room(), 4u);
  EXPECT_TRUE(w.empty());
}

TEST(InflightWindow, EndOfStreamIsOutsideTheCapacityAndAckedByItsFlag) {
  InflightWindow w(1, Options());
  const auto t0 = Clock::now();
  w.Add(DataItem(0), t0);
  w.Add(Item::EndOfStream("s", 1), t0);
  EXPECT_EQ(w.size(), 2u);
  w.Ack(AckOf(0, 1), t0);
  EXPECT_FALSE(w.empty());
  EXPECT_NE(w.DescribeOutstanding(5).find("end-of-stream"), std::string::npos);
  w.Ack(AckOf(0, 1, true), t0);
  EXPECT_TRUE(w.empty());
}

TEST(InflightWindow, CompleteReleasesEverything) {
  InflightWindow w(8, Options());
  const auto t0 = Clock::now();
  for (uint64_t s = 0; s < 5; ++s) w.Add(DataItem(s), t0);
  w.Add(Item::EndOfStream("s", 5), t0);
  AckMessage complete;
  complete.stream = "s";
  complete.complete = true;
  EXPECT_EQ(w.Ack(complete, t0), 6u);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.room(), 8u);
}

// RACK: an item older than a later-sent, acknowledged one by more than the
// latest RTT plus the reordering allowance is lost; before that it is not.
TEST(InflightWindow, ItemOvertakenByALaterAckedOneIsResentAfterTheReorderWindow) {
  InflightWindow w(16, Options());
  const auto t0 = Clock::now();
  w.Add(DataItem(0), t0);
  w.Add(DataItem(1), t0 + milliseconds(5));
  w.Ack(AckOf(1, 2), t0 + milliseconds(55));  // RTT 50 ms; 0 is behind.
  std::vector<Item> out;
  // Allowance is max(min_rto 200 ms, ...): not yet at 100 ms.
  EXPECT_EQ(w.TakeExpired(t0 + milliseconds(100), 10, out), 0u);
  EXPECT_EQ(w.TakeExpired(t0 + milliseconds(300), 10, out), 1u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 0u);
  EXPECT_EQ(out[0].payload, "p0");  // The copy kept for replay.
  EXPECT_EQ(w.retransmits(), 1u);
}

// A slow but healthy pipeline: acks keep coming in order, so nothing is
// resent however long each item takes.
TEST(InflightWindow, SteadyAckProgressNeverResendsInFifoOrder) {
  InflightWindow w(1000, Options());
  const auto t0 = Clock::now();
  for (uint64_t s = 0; s < 1000; ++s) w.Add(DataItem(s), t0);
  std::vector<Item> out;
  for (uint64_t s = 0; s < 1000; ++s) {
    auto now = t0 + milliseconds(100 * (s + 1));  // 100 s in all.
    w.Ack(AckOf(s, s + 1), now);
    EXPECT_EQ(w.TakeExpired(now, 100, out), 0u) << "at seq " << s;
  }
  EXPECT_TRUE(w.empty());
}

// RTO fallback: with no ack progress at all for an RTO, outstanding items
// are resent, and the timeout doubles while the silence lasts.
TEST(InflightWindow, SilenceResendsAfterTheRtoAndBacksOff) {
  InflightWindow w(16, Options());
  const auto t0 = Clock::now();
  w.Add(DataItem(0), t0);
  w.Add(DataItem(1), t0);
  std::vector<Item> out;
  EXPECT_EQ(w.TakeExpired(t0 + milliseconds(999), 10, out), 0u);
  EXPECT_EQ(w.TakeExpired(t0 + milliseconds(1000), 10, out), 2u);
  EXPECT_EQ(w.rto(), milliseconds(2000));  // Backed off.
  EXPECT_EQ(w.TakeExpired(t0 + milliseconds(2500), 10, out), 0u);
  EXPECT_EQ(w.TakeExpired(t0 + milliseconds(3000), 10, out), 2u);
  EXPECT_EQ(w.rto(), milliseconds(4000));
  w.Ack(AckOf(0, 2), t0 + milliseconds(3100));
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.rto(), milliseconds(1000));  // Progress resets the backoff.
}

TEST(InflightWindow, RtoAdaptsToTheMeasuredAckLatency) {
  InflightWindow w(64, Options());
  auto t = Clock::now();
  for (uint64_t s = 0; s < 50; ++s) {
    w.Add(DataItem(s), t);
    t += milliseconds(600);
    w.Ack(AckOf(s, s + 1), t);  // Every ack takes 600 ms.
  }
  EXPECT_GE(w.rto(), milliseconds(600));
  EXPECT_LT(w.rto(), milliseconds(1000));
}

TEST(InflightWindow, DescribeOutstandingListsTheLowestSeqs) {
  InflightWindow w(16, Options());
  const auto t0 = Clock::now();
  for (uint64_t s = 0; s < 6; ++s) w.Add(DataItem(s), t0);
  w.Ack(AckOf(0, 2), t0);
  EXPECT_EQ(w.DescribeOutstanding(3), "4 items (seq 2 3 4 ...)");
}

}  // namespace
}  // namespace sluice
