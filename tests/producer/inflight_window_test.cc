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

// When the sink says it takes items further above its lowest missing seq
// (Ack.span), an item held back (waiting in a stage for a retry) leaves the
// rest of the window usable: it moves out of the ring, is still resent as
// sent and released by its ack, and only the span bounds how far on the
// others go.
TEST(InflightWindow, AnItemHeldBackDoesNotHoldTheOthersToTheCapacity) {
  InflightWindow w(4, Options(), FlowOptions{.initial_limit = 4, .span = 10});
  auto t = Clock::now();
  uint64_t next = 0;
  for (; next < 4; ++next) w.Add(DataItem(next), t);
  // Seq 0 is held back; the others are acked, round after round.
  for (int round = 0; round < 2; ++round) {
    t += milliseconds(10);
    w.Ack(AckOf(next - 3, next), t);
    EXPECT_EQ(w.size(), 1u);
    EXPECT_EQ(w.room(), 3u);  // The flow limit less seq 0.
    for (int i = 0; i < 3; ++i, ++next) w.Add(DataItem(next), t);
  }
  // Seqs 0 and 7..9 are outstanding; the span (10) allows seq 9, no more.
  t += milliseconds(10);
  w.Ack(AckOf(7, 10), t);
  EXPECT_EQ(w.room(), 0u);
  EXPECT_EQ(w.DescribeOutstanding(5), "1 items (seq 0)");
  std::vector<Item> out;
  ASSERT_EQ(w.TakeExpired(t + milliseconds(1000), 10, out), 1u);  // The RTO.
  EXPECT_EQ(out[0].seq, 0u);
  EXPECT_EQ(out[0].payload, "p0");
  w.Ack(AckOf(0, 1), t + milliseconds(1010));
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.room(), 4u);
  // A straggler (outside the ring) does not count against the flow limit:
  // it waits for its retry without holding an op's thread.
  InflightWindow wide(4, Options(), FlowOptions{.initial_limit = 4, .span = 100});
  for (uint64_t s = 0; s < 4; ++s) wide.Add(DataItem(s), t);
  wide.Ack(AckOf(1, 4), t + milliseconds(10));
  EXPECT_EQ(wide.room(), 3u);  // Seq 0 is still in the ring.
  for (uint64_t s = 4; s < 7; ++s) wide.Add(DataItem(s), t);  // Moves 0 out.
  wide.Ack(AckOf(4, 7), t + milliseconds(20));
  EXPECT_EQ(wide.room(), 4u);
  // Without the sink's word, the capacity is the span, as before.
  InflightWindow narrow(4, Options(), FlowOptions{.initial_limit = 4});
  for (uint64_t s = 0; s < 4; ++s) narrow.Add(DataItem(s), t);
  narrow.Ack(AckOf(1, 4), t + milliseconds(10));
  EXPECT_EQ(narrow.room(), 0u);
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

// The window keeps what a resend needs, not the items themselves: a resend
// is the item as it was sent (stream, seq, payload, production time, and
// the failure of a failed item), and the end-of-stream keeps its count.
TEST(InflightWindow, ResendIsTheItemAsSentFailureAndEndOfStreamCountIncluded) {
  InflightWindow w(8, Options());
  const auto t0 = Clock::now();
  Item plain = DataItem(0);
  plain.produced_at_us = 1234;
  Item failed = DataItem(1);
  failed.payload = std::string(100, 'x');  // Past the small-string buffer.
  failed.failure = std::make_shared<ItemFailure>(
      ItemFailure{.op = "producer", .reason = "item_too_large", .attempts = 1});
  w.Add(std::vector<Item>{plain, failed}, t0);
  w.Add(Item::EndOfStream("s", 2), t0);
  std::vector<Item> out;
  ASSERT_EQ(w.TakeExpired(t0 + milliseconds(1000), 10, out), 3u);  // The RTO.
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].stream, "s");
  EXPECT_EQ(out[0].seq, 0u);
  EXPECT_EQ(out[0].payload, "p0");
  EXPECT_EQ(out[0].produced_at_us, 1234);
  EXPECT_FALSE(out[0].failed());
  EXPECT_EQ(out[1].seq, 1u);
  EXPECT_EQ(out[1].payload, failed.payload);
  ASSERT_TRUE(out[1].failed());
  EXPECT_EQ(out[1].failure->reason, "item_too_large");
  EXPECT_TRUE(out[2].end_of_stream);
  EXPECT_EQ(out[2].count, 2u);
  EXPECT_EQ(out[2].stream, "s");
  // Once acked, a failure is let go; the slot's next item is not failed.
  w.Ack(AckOf(0, 2, true), t0 + milliseconds(1100));
  w.Add(DataItem(9), t0 + milliseconds(1100));
  out.clear();
  ASSERT_EQ(w.TakeExpired(t0 + milliseconds(5000), 10, out), 1u);
  EXPECT_EQ(out[0].seq, 9u);
  EXPECT_FALSE(out[0].failed());
}

// An item overtaken by a later-sent, acknowledged one is resent once it has
// waited twice the longest recent round trip plus the minimum RTO; not
// before: parallel workers overtake each other as a matter of course.
TEST(InflightWindow, ItemOvertakenByALaterAckedOneIsResentOnceOverdue) {
  InflightWindow w(64, Options());
  const auto t0 = Clock::now();
  w.Add(DataItem(0), t0);
  std::vector<Item> out;
  // Items 1, 2, ... every 10 ms, each acked 50 ms later; 0 never is.
  uint64_t next = 1;
  for (auto now = t0; now < t0 + milliseconds(300); now += milliseconds(5)) {
    if (now >= t0 + milliseconds(5 + 10 * (next - 1))) w.Add(DataItem(next++), now);
    for (uint64_t s = 1; s < next; ++s) {
      if (now == t0 + milliseconds(55 + 10 * (s - 1))) w.Ack(AckOf(s, s + 1), now);
    }
    // Overdue only after 2 x 50 ms + 200 ms.
    EXPECT_EQ(w.TakeExpired(now, 10, out), 0u) << "at " << (now - t0).count();
  }
  EXPECT_EQ(w.overdue_factor(), 2);
  EXPECT_EQ(w.TakeExpired(t0 + milliseconds(300), 10, out), 1u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 0u);
  EXPECT_EQ(out[0].payload, "p0");  // The copy kept for replay.
  EXPECT_EQ(w.retransmits(), 1u);
}

// D-SACK: the sink got a duplicate of something resent, so the resend was
// needless; the allowance grows (to 8 x at most) and shrinks back after a
// quiet spell.
TEST(InflightWindow, DuplicatesReportedAfterAResendWidenTheOverdueAllowance) {
  InflightWindow w(16, Options());
  auto t = Clock::now();
  w.Add(DataItem(0), t);
  w.Add(DataItem(1), t + milliseconds(5));
  w.Ack(AckOf(1, 2), t + milliseconds(55));
  std::vector<Item> out;
  ASSERT_EQ(w.TakeExpired(t + milliseconds(300), 10, out), 1u);
  AckMessage dsack = AckOf(0, 1);
  dsack.duplicates = 1;
  w.Ack(dsack, t + milliseconds(310));
  EXPECT_EQ(w.overdue_factor(), 3);
  EXPECT_EQ(w.duplicates_reported(), 1u);
  for (int i = 0; i < 20; ++i) {  // More than the most, far apart.
    t += std::chrono::seconds(1);
    w.Ack(dsack, t);
  }
  EXPECT_EQ(w.overdue_factor(), 8);
  // Quiet for long enough: back down by one.
  t += std::chrono::seconds(17);
  w.Ack(AckOf(0, 1), t);
  EXPECT_EQ(w.overdue_factor(), 7);
}

// A duplicate with nothing resent (an ack was lost) says nothing of the
// allowance.
TEST(InflightWindow, DuplicatesWithoutAResendLeaveTheAllowanceAlone) {
  InflightWindow w(16, Options());
  const auto t0 = Clock::now();
  w.Add(DataItem(0), t0);
  AckMessage dsack = AckOf(0, 1);
  dsack.duplicates = 3;
  w.Ack(dsack, t0 + milliseconds(50));
  EXPECT_EQ(w.overdue_factor(), 2);
  EXPECT_EQ(w.duplicates_reported(), 3u);
}

// Acks of items that waited in stages about as long as their ops took:
// `queued_ms` and `op_ms` per item.
AckMessage TimedAck(uint64_t begin, uint64_t end, double queued_ms, double op_ms) {
  AckMessage ack = AckOf(begin, end);
  ack.timed_items = end - begin;
  ack.queued_us = static_cast<uint64_t>(queued_ms * 1000 * ack.timed_items);
  ack.op_us = static_cast<uint64_t>(op_ms * 1000 * ack.timed_items);
  return ack;
}

// Flow control: the limit starts at the initial limit, grows with each ack
// while items barely wait, and shrinks once they wait longer than the
// target (a few op times): a worker never hoards more than that.
TEST(InflightWindow, FlowLimitGrowsWhileItemsBarelyWaitAndShrinksWhenTheyQueue) {
  InflightWindow w(100000, Options(), FlowOptions{.initial_limit = 64});
  EXPECT_EQ(w.limit(), 64u);
  EXPECT_EQ(w.room(), 64u);
  auto t = Clock::now();
  uint64_t next = 0;
  // 10 ms ops, no waiting: slow start doubles the limit per round trip.
  for (int round = 0; round < 4; ++round) {
    const uint64_t first = next;
    const size_t n = w.room();
    for (size_t i = 0; i < n; ++i) w.Add(DataItem(next++), t);
    t += milliseconds(20);
    w.Ack(TimedAck(first, next, 0, 10), t);
  }
  EXPECT_EQ(w.limit(), 64u * 16);
  EXPECT_TRUE(w.empty());
  // Now items wait 500 ms for 10 ms ops: far over the target; the limit
  // falls, round trip after round trip, to its floor at most halving each.
  size_t before = w.limit();
  for (int round = 0; round < 16; ++round) {
    const uint64_t first = next;
    const size_t n = w.room();
    for (size_t i = 0; i < n; ++i) w.Add(DataItem(next++), t);
    t += milliseconds(520);
    w.Ack(TimedAck(first, next, 500, 10), t);
    EXPECT_LE(w.limit(), before);
    EXPECT_GE(w.limit(), before / 2);
    before = w.limit();
  }
  EXPECT_EQ(w.limit(), 8u);  // FlowOptions::min_limit.
  EXPECT_GT(w.queued_us(), 400'000);  // What the acks said, smoothed.
}

// Cheap ops (untimed acks) and a slow sink: the stages report no waiting,
// but the round trip grows as items queue in front of the sink. Once it is
// more than 100 ms beyond the shortest, the limit falls; while it is not (a
// busy chain of cheap ops), the limit climbs to the capacity.
TEST(InflightWindow, RoundTripsGrowingPastTheShortestShrinkTheLimitOfUntimedOps) {
  auto run = [](milliseconds queueing_per_round) {
    InflightWindow w(40000, Options(), FlowOptions{.initial_limit = 1024});
    auto t = Clock::now();
    uint64_t next = 0;
    milliseconds rtt(5);
    for (int round = 0; round < 40; ++round) {
      const uint64_t first = next;
      const size_t n = w.room();
      for (size_t i = 0; i < n; ++i) w.Add(DataItem(next++), t);
      t += rtt;
      w.Ack(AckOf(first, next), t);
      rtt = std::min(rtt + queueing_per_round, milliseconds(600));
    }
    return w.limit();
  };
  EXPECT_EQ(run(milliseconds(0)), 40000u);  // 5 ms round trips: all of it.
  EXPECT_LT(run(milliseconds(25)), 1024u);   // Up to 600 ms: held back.
}

// Slow start ends on the first ack whose round trip is more than 100 ms
// beyond the shortest, not once the smoothed round trip catches up: while
// a queue builds, the smoothed one lags by hundreds of milliseconds.
TEST(InflightWindow, OneRoundTripFarBeyondTheShortestEndsSlowStart) {
  InflightWindow w(40000, Options(), FlowOptions{.initial_limit = 64});
  auto t = Clock::now();
  uint64_t next = 0;
  auto round = [&](milliseconds rtt) {
    const uint64_t first = next;
    const size_t n = w.room();
    for (size_t i = 0; i < n; ++i) w.Add(DataItem(next++), t);
    t += rtt;
    w.Ack(AckOf(first, next), t);
  };
  round(milliseconds(5));
  round(milliseconds(5));
  EXPECT_EQ(w.limit(), 256u);  // Doubled twice.
  round(milliseconds(150));
  EXPECT_LT(w.limit(), 512u);  // Slow start is over: it would have doubled.
  for (int i = 0; i < 5; ++i) round(milliseconds(5));
  EXPECT_LT(w.limit(), 256u * 32);  // No longer doubling per round trip.
}

// The limit bounds Fitting(): what is beyond it waits for acks.
TEST(InflightWindow, FittingStopsAtTheFlowLimit) {
  InflightWindow w(1000, Options(), FlowOptions{.initial_limit = 3});
  std::vector<Item> items;
  for (uint64_t s = 0; s < 5; ++s) items.push_back(DataItem(s));
  items.push_back(Item::EndOfStream("s", 5));
  EXPECT_EQ(w.Fitting(items), 3u);
  const auto t0 = Clock::now();
  w.Add(items[0], t0);
  EXPECT_EQ(w.Fitting(std::span<const Item>(items).subspan(1)), 2u);
}

// Long items: the payload bytes outstanding stay within max_bytes, except
// that an empty window always takes one item, however long, so that a
// stream of items longer than the bound still moves.
TEST(InflightWindow, PayloadBytesOutstandingStayWithinTheBoundOneItemAlwaysGoes) {
  InflightWindow w(1000, Options(), FlowOptions{.max_bytes = 1000});
  std::vector<Item> items;
  for (uint64_t s = 0; s < 6; ++s) {
    items.push_back(DataItem(s));
    items.back().payload = std::string(s == 0 ? 5000 : 300, 'x');
  }
  const auto t0 = Clock::now();
  EXPECT_EQ(w.Fitting(items), 1u) << "the 5000-byte item goes alone";
  w.Add(items[0], t0);
  EXPECT_EQ(w.room(), 0u);
  EXPECT_EQ(w.Fitting(std::span<const Item>(items).subspan(1)), 0u);
  w.Ack(AckOf(0, 1), t0 + milliseconds(1));
  EXPECT_GT(w.room(), 0u);
  EXPECT_EQ(w.Fitting(std::span<const Item>(items).subspan(1)), 3u);  // 900 bytes.
  w.Add(std::span<const Item>(items).subspan(1, 3), t0 + milliseconds(1));
  EXPECT_EQ(w.Fitting(std::span<const Item>(items).subspan(4)), 0u);
  w.Ack(AckOf(1, 2), t0 + milliseconds(2));  // 600 bytes left.
  EXPECT_EQ(w.Fitting(std::span<const Item>(items).subspan(4)), 1u);
}

// Before the first round trip, frames hold one item when there are several
// workers, so that round-robin spreads the first burst evenly; later they
// hold about limit / (8 x workers), up to the batch cap.
TEST(InflightWindow, FramesHoldOneItemPerWorkerTurnUntilTheFirstRoundTrip) {
  InflightWindow w(100000, Options(), FlowOptions{.initial_limit = 1024, .peers = 4});
  EXPECT_EQ(w.FrameItems(128), 1u);
  const auto t0 = Clock::now();
  w.Add(DataItem(0), t0);
  w.Ack(AckOf(0, 1), t0 + milliseconds(1));
  EXPECT_EQ(w.FrameItems(128), 32u);  // 1025 / 32.
  InflightWindow single(100000, Options(), FlowOptions{.initial_limit = 1024});
  EXPECT_EQ(single.FrameItems(128), 128u);
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
