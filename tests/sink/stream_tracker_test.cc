#include "sink/stream_tracker.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <utility>

#include <gtest/gtest.h>

namespace sluice {
namespace {

using Outcome = StreamTracker::Outcome;
constexpr int64_t kNow = 1'700'000'000'000'000;  // Wall clock, µs.

TEST(StreamTracker, CompleteWhenEndOfStreamSeenAndEverySeqBelowCount) {
  StreamTracker t("s");
  for (uint64_t i = 0; i < 5; ++i) EXPECT_EQ(t.AcceptItem(i, 0, kNow), Outcome::kNew);
  EXPECT_FALSE(t.complete());  // No end-of-stream yet.
  t.AcceptEndOfStream(5, kNow);
  EXPECT_TRUE(t.complete());
  EXPECT_EQ(t.missing(), 0u);
  EXPECT_TRUE(t.in_order());
}

TEST(StreamTracker, EndOfStreamOvertakingItemsStillCompletesInAnyOrder) {
  std::vector<uint64_t> seqs(1000);
  std::iota(seqs.begin(), seqs.end(), 0);
  std::shuffle(seqs.begin(), seqs.end(), std::mt19937(7));
  StreamTracker t("s");
  t.AcceptEndOfStream(1000, kNow);
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_FALSE(t.complete());
    EXPECT_EQ(t.missing(), 1000 - i);
    t.AcceptItem(seqs[i], 0, kNow);
  }
  EXPECT_TRUE(t.complete());
  EXPECT_FALSE(t.in_order());
  EXPECT_NE(t.stats().completed_unix_us, 0);
}

TEST(StreamTracker, DuplicatesAreCountedNotAddedTwice) {
  StreamTracker t("s");
  EXPECT_EQ(t.AcceptItem(3, 0, kNow), Outcome::kNew);
  EXPECT_EQ(t.AcceptItem(3, 0, kNow), Outcome::kDuplicate);
  EXPECT_EQ(t.received(), 2u);
  EXPECT_EQ(t.unique(), 1u);
  EXPECT_EQ(t.duplicates(), 1u);
}

TEST(StreamTracker, MissingItemsAreCountedAndListed) {
  StreamTracker t("s");
  for (uint64_t i = 0; i < 10; ++i) {
    if (i != 4 && i != 8) t.AcceptItem(i, 0, kNow);
  }
  t.AcceptEndOfStream(10, kNow);
  EXPECT_FALSE(t.complete());
  EXPECT_EQ(t.missing(), 2u);
  EXPECT_EQ(t.MissingSeqs(10), (std::vector<uint64_t>{4, 8}));
}

TEST(StreamTracker, MissingWithoutEndOfStreamIsTheGapsBelowTheHighestSeq) {
  StreamTracker t("s");
  t.AcceptItem(0, 0, kNow);
  t.AcceptItem(5, 0, kNow);
  EXPECT_EQ(t.missing(), 4u);
  EXPECT_FALSE(t.expected().has_value());
}

TEST(StreamTracker, ItemsAtOrBeyondTheCountAreOutOfRange) {
  StreamTracker t("s");
  t.AcceptEndOfStream(2, kNow);
  EXPECT_EQ(t.AcceptItem(2, 0, kNow), Outcome::kOutOfRange);
  EXPECT_EQ(t.out_of_range(), 1u);
  EXPECT_EQ(t.unique(), 0u);
}

TEST(StreamTracker, ConflictingEndOfStreamKeepsTheFirstCount) {
  StreamTracker t("s");
  t.AcceptEndOfStream(3, kNow);
  t.AcceptEndOfStream(5, kNow);
  EXPECT_EQ(t.expected(), 3u);
  EXPECT_EQ(t.conflicting_ends(), 1u);
}

TEST(StreamTracker, EmptyStreamCompletesOnItsEndOfStream) {
  StreamTracker t("s");
  t.AcceptEndOfStream(0, kNow);
  EXPECT_TRUE(t.complete());
}

TEST(StreamTracker, InOrderIsFalseOnceAnItemArrivesAfterAHigherOne) {
  StreamTracker t("s");
  t.AcceptItem(0, 0, kNow);
  t.AcceptItem(2, 0, kNow);
  EXPECT_TRUE(t.in_order());
  t.AcceptItem(1, 0, kNow);
  EXPECT_FALSE(t.in_order());
}

// Issue 8: a peer's sequence numbers cannot make the sink allocate beyond the
// window, whatever their values.
TEST(SeqWindow, NumbersBeyondTheWindowAreRefusedAndCostNothing) {
  SeqWindow s(1 << 14);
  EXPECT_EQ(s.Add(0), SeqWindow::Insert::kNew);
  EXPECT_EQ(s.Add(uint64_t{1} << 39), SeqWindow::Insert::kBeyondWindow);
  // The lowest absent is 1: the window is [1, 1 + 16384).
  EXPECT_EQ(s.Add(16385), SeqWindow::Insert::kBeyondWindow);
  EXPECT_EQ(s.Add(16384 * 2), SeqWindow::Insert::kBeyondWindow);
  EXPECT_EQ(s.Add(16384), SeqWindow::Insert::kNew);  // The window's last.
  EXPECT_EQ(s.Add(0), SeqWindow::Insert::kDuplicate);
  EXPECT_EQ(s.size(), 2u);
  EXPECT_LE(s.bitmap_bytes(), (16384 / 64 + 1) * 8u);
  EXPECT_TRUE(s.Contains(16384));
  EXPECT_FALSE(s.Contains(1));
}

// Issue 8: memory does not grow with the stream's length: everything below
// the lowest missing number is one number.
TEST(SeqWindow, MemoryStaysFlatOverAMillionNumbersInOrder) {
  SeqWindow s(1 << 20);
  size_t most = 0;
  for (uint64_t i = 0; i < 1'000'000; ++i) {
    ASSERT_EQ(s.Add(i), SeqWindow::Insert::kNew);
    most = std::max(most, s.bitmap_bytes());
  }
  EXPECT_EQ(s.size(), 1'000'000u);
  EXPECT_EQ(s.lowest_absent(), 1'000'000u);
  EXPECT_LE(most, 8u);
  EXPECT_EQ(s.CountBelow(500'000), 500'000u);
}

TEST(SeqWindow, AbsentBelowListsGapsAndRangesCoverTheMembers) {
  SeqWindow s(1 << 20);
  for (uint64_t i = 0; i < 40000; ++i) {
    if (i != 3 && i != 20000) s.Add(i);
  }
  EXPECT_EQ(s.lowest_absent(), 3u);
  EXPECT_EQ(s.AbsentBelow(40002, 10),
            (std::vector<uint64_t>{3, 20000, 40000, 40001}));
  EXPECT_EQ(s.AbsentBelow(40002, 1), (std::vector<uint64_t>{3}));
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  s.ForEachRange([&](uint64_t b, uint64_t e) { ranges.emplace_back(b, e); });
  EXPECT_EQ(ranges, (std::vector<std::pair<uint64_t, uint64_t>>{
                        {0, 3}, {4, 20000}, {20001, 40000}}));
}

// Recovery re-adds whole ranges: a range from 0 costs no per-number work,
// and counts stay exact when ranges overlap what is there.
TEST(SeqWindow, AddRangeRestoresRangesExactly) {
  SeqWindow s(1 << 10);
  s.Add(5);
  s.AddRange(0, uint64_t{1} << 38);  // Would take hours number by number.
  EXPECT_EQ(s.size(), uint64_t{1} << 38);
  EXPECT_EQ(s.lowest_absent(), uint64_t{1} << 38);
  s.AddRange((uint64_t{1} << 38) + 10, (uint64_t{1} << 38) + 20);
  EXPECT_EQ(s.size(), (uint64_t{1} << 38) + 10);
  s.AddRange((uint64_t{1} << 38) + 5, (uint64_t{1} << 38) + 15);  // Overlaps.
  EXPECT_EQ(s.size(), (uint64_t{1} << 38) + 15);
  EXPECT_EQ(s.lowest_absent(), (uint64_t{1} << 38));
  s.AddRange(uint64_t{1} << 38, (uint64_t{1} << 38) + 5);
  EXPECT_EQ(s.lowest_absent(), (uint64_t{1} << 38) + 20);
  EXPECT_EQ(s.size(), (uint64_t{1} << 38) + 20);
}

// Issue 8, point 5: items beyond the count that came before the
// end-of-stream are errors, not part of the stream.
TEST(StreamTracker, ItemsBeyondTheCountBeforeTheEndOfStreamAreErrors) {
  StreamTracker t("s");
  for (uint64_t i = 0; i <= 100; ++i) t.AcceptItem(i, 0, kNow);
  t.AcceptEndOfStream(100, kNow);
  EXPECT_TRUE(t.complete());
  EXPECT_EQ(t.unique(), 100u);
  EXPECT_EQ(t.beyond_count(), 1u);
  EXPECT_EQ(t.errors(), 1u);
  t.AcceptEndOfStream(120, kNow);
  EXPECT_EQ(t.conflicting_ends(), 1u);
  EXPECT_EQ(t.errors(), 2u);
  EXPECT_EQ(t.AcceptItem(105, 0, kNow), Outcome::kOutOfRange);  // After it.
  EXPECT_EQ(t.errors(), 3u);
}

TEST(LatencyHistogram, QuantilesWithinThreePercent) {
  LatencyHistogram h;
  for (int64_t v = 1; v <= 100000; ++v) h.Record(v);
  EXPECT_NEAR(h.Quantile(0.5), 50000, 50000 * 0.03);
  EXPECT_NEAR(h.Quantile(0.99), 99000, 99000 * 0.03);
  LatencyHistogram other;
  other.Record(5);
  h.Merge(other);
  EXPECT_EQ(h.count(), 100001u);
  EXPECT_EQ(LatencyHistogram().Quantile(0.5), 0);
}

TEST(LatencyHistogram, NegativeLatencyFromSkewedClocksCountsAsZero) {
  LatencyHistogram h;
  h.Record(-50);
  EXPECT_EQ(h.Quantile(0.5), 0);
}

// Failure reasons come from the wire: their variety and length are capped.
TEST(StreamTracker, FailedItemsAreCountedByABoundedSetOfReasons) {
  StreamTracker t("s");
  for (int i = 0; i < 1000; ++i) t.RecordFailed("reason_" + std::to_string(i));
  t.RecordFailed(std::string(500, 'x'));
  t.RecordDropped();
  EXPECT_EQ(t.failed(), 1001u);
  EXPECT_EQ(t.dropped(), 1u);
  EXPECT_LE(t.failed_by_reason().size(), StreamTracker::kMaxReasons + 1);
  EXPECT_EQ(t.failed_by_reason().at("reason_0"), 1u);
  EXPECT_GT(t.failed_by_reason().at("other"), 900u);
  for (const auto& [reason, n] : t.failed_by_reason()) EXPECT_LE(reason.size(), 64u);
}

}  // namespace
}  // namespace sluice
