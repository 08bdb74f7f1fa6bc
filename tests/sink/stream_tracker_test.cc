#include "sink/stream_tracker.h"

#include <algorithm>
#include <numeric>
#include <random>

#include <gtest/gtest.h>

namespace sluice {
namespace {

using Outcome = StreamTracker::Outcome;
const auto kNow = std::chrono::steady_clock::now();

TEST(StreamTracker, CompleteWhenEndOfStreamSeenAndEverySeqBelowCount) {
  StreamTracker t("s");
  for (uint64_t i = 0; i < 5; ++i) EXPECT_EQ(t.AcceptItem(i, 0, 0, kNow), Outcome::kNew);
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
    t.AcceptItem(seqs[i], 0, 0, kNow);
  }
  EXPECT_TRUE(t.complete());
  EXPECT_FALSE(t.in_order());
  EXPECT_TRUE(t.completed_at().has_value());
}

TEST(StreamTracker, DuplicatesAreCountedNotAddedTwice) {
  StreamTracker t("s");
  EXPECT_EQ(t.AcceptItem(3, 0, 0, kNow), Outcome::kNew);
  EXPECT_EQ(t.AcceptItem(3, 0, 0, kNow), Outcome::kDuplicate);
  EXPECT_EQ(t.received(), 2u);
  EXPECT_EQ(t.unique(), 1u);
  EXPECT_EQ(t.duplicates(), 1u);
}

TEST(StreamTracker, MissingItemsAreCountedAndListed) {
  StreamTracker t("s");
  for (uint64_t i = 0; i < 10; ++i) {
    if (i != 4 && i != 8) t.AcceptItem(i, 0, 0, kNow);
  }
  t.AcceptEndOfStream(10, kNow);
  EXPECT_FALSE(t.complete());
  EXPECT_EQ(t.missing(), 2u);
  EXPECT_EQ(t.MissingSeqs(10), (std::vector<uint64_t>{4, 8}));
}

TEST(StreamTracker, MissingWithoutEndOfStreamIsTheGapsBelowTheHighestSeq) {
  StreamTracker t("s");
  t.AcceptItem(0, 0, 0, kNow);
  t.AcceptItem(5, 0, 0, kNow);
  EXPECT_EQ(t.missing(), 4u);
  EXPECT_FALSE(t.expected().has_value());
}

TEST(StreamTracker, ItemsAtOrBeyondTheCountAreOutOfRange) {
  StreamTracker t("s");
  t.AcceptEndOfStream(2, kNow);
  EXPECT_EQ(t.AcceptItem(2, 0, 0, kNow), Outcome::kOutOfRange);
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
  t.AcceptItem(0, 0, 0, kNow);
  t.AcceptItem(2, 0, 0, kNow);
  EXPECT_TRUE(t.in_order());
  t.AcceptItem(1, 0, 0, kNow);
  EXPECT_FALSE(t.in_order());
}

TEST(SeqSet, SparseHugeSeqsCostLittleAndCountCorrectly) {
  SeqSet s;
  EXPECT_TRUE(s.Insert(0));
  EXPECT_TRUE(s.Insert(uint64_t{1} << 39));
  EXPECT_FALSE(s.Insert(0));
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s.CountBelow(1), 1u);
  EXPECT_EQ(s.CountBelow(uint64_t{1} << 39), 1u);
  EXPECT_EQ(s.CountBelow((uint64_t{1} << 39) + 1), 2u);
  EXPECT_TRUE(s.Contains(uint64_t{1} << 39));
  EXPECT_FALSE(s.Contains(1));
}

TEST(SeqSet, AbsentBelowListsGapsAcrossChunks) {
  SeqSet s;
  for (uint64_t i = 0; i < 40000; ++i) {
    if (i != 3 && i != 20000) s.Insert(i);
  }
  EXPECT_EQ(s.AbsentBelow(40002, 10),
            (std::vector<uint64_t>{3, 20000, 40000, 40001}));
  EXPECT_EQ(s.AbsentBelow(40002, 1), (std::vector<uint64_t>{3}));
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
