// sink/stream_tracker.h
//
// What the sink knows about one stream, and the rule that decides completion
// (docs/design.md, "Wire rules"): a stream is complete when its end-of-stream has
// been seen and every sequence number below its count has arrived. This holds
// for any number of workers and any arrival order, including an end-of-stream
// that overtakes items.
//
// Sequence numbers come from the wire, so memory must follow neither their
// values nor the stream's length: SeqWindow keeps everything below the lowest
// missing sequence number as one number and a bitmap of at most `window`
// numbers above it. A number beyond that window is refused (and counted);
// the producer sends it again once the gap below has filled.
//
// Thread safety: none; the sink's thread owns its trackers.
#ifndef SLUICE_SINK_STREAM_TRACKER_H_
#define SLUICE_SINK_STREAM_TRACKER_H_

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sluice {

// A set of uint64 sequence numbers, dense below its lowest absent member.
class SeqWindow {
 public:
  enum class Insert { kNew, kDuplicate, kBeyondWindow };
  // REQUIRES: window >= 64.
  explicit SeqWindow(uint64_t window) : window_(window) {}

  // Adds `seq` unless it is a member already or lies at or beyond
  // lowest_absent() + window.
  Insert Add(uint64_t seq);
  // Adds every member of [begin, end) that the window allows (recovery):
  // a run starting at or below lowest_absent() costs no per-number work.
  void AddRange(uint64_t begin, uint64_t end);
  bool Contains(uint64_t seq) const;
  uint64_t size() const { return size_; }
  // Every number below this is a member; this one is not.
  uint64_t lowest_absent() const;
  // How many members are below `limit`.
  uint64_t CountBelow(uint64_t limit) const;
  // Members in [0, limit) that are absent, at most `max` of them, ascending.
  std::vector<uint64_t> AbsentBelow(uint64_t limit, size_t max) const;
  // Calls fn(begin, end) for each maximal run [begin, end) of members.
  void ForEachRange(const std::function<void(uint64_t, uint64_t)>& fn) const;
  // Bytes of bitmap held (for tests of the bound).
  size_t bitmap_bytes() const { return words_.size() * sizeof(uint64_t); }

 private:
  const uint64_t window_;
  uint64_t origin_ = 0;          // A multiple of 64; all below are members.
  std::deque<uint64_t> words_;   // words_[i] holds origin_ + 64 i ... + 63.
  uint64_t size_ = 0;
};

// Percentiles of non-negative microsecond values, in log-linear buckets
// (32 per power of two: within 3%), constant memory.
class LatencyHistogram {
 public:
  void Record(int64_t micros);
  void Merge(const LatencyHistogram& other);
  uint64_t count() const { return count_; }
  // The value at quantile q in [0, 1], in microseconds; 0 if empty.
  double Quantile(double q) const;
  // Non-empty buckets as (index, count) pairs; and back (unknown indexes
  // are ignored), for the sink's state file.
  std::vector<std::pair<uint32_t, uint64_t>> Buckets() const;
  void AddBucket(uint32_t index, uint64_t n);

 private:
  static constexpr int kSubBits = 5;
  static constexpr int kBuckets = (64 - kSubBits) * (1 << kSubBits);
  static int BucketOf(uint64_t v);
  static double MidpointOf(int bucket);
  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
};

// Everything about a stream except its seen-set and count: plain numbers,
// saved and restored as they are by the sink's state file.
struct StreamStats {
  uint64_t received = 0;
  uint64_t duplicates = 0;
  uint64_t out_of_range = 0;      // seq >= a known count: refused.
  uint64_t beyond_window = 0;     // seq too far above the lowest missing.
  uint64_t conflicting_ends = 0;  // End-of-stream with another count.
  uint64_t after_end = 0;         // New items after the end-of-stream.
  uint64_t failed = 0;
  uint64_t dropped = 0;
  std::map<std::string, uint64_t> failed_by_reason;
  std::optional<uint64_t> highest_seq;
  bool in_order = true;
  int64_t first_unix_us = 0;      // Wall clock of the first message.
  int64_t completed_unix_us = 0;  // ... and of completion; 0 = not yet.
};

class StreamTracker {
 public:
  enum class Outcome { kNew, kDuplicate, kOutOfRange, kBeyondWindow };
  static constexpr uint64_t kDefaultWindow = uint64_t{1} << 20;

  explicit StreamTracker(std::string id, uint64_t window = kDefaultWindow)
      : id_(std::move(id)), seen_(window) {}

  // Records a data item that arrived at `now_us` (wall clock). kOutOfRange
  // if its seq is at or beyond a known count, kBeyondWindow if it is too far
  // ahead of the lowest missing one: both refused, counted.
  Outcome AcceptItem(uint64_t seq, int64_t produced_at_us, int64_t now_us);
  // Records the end-of-stream. A second one with the same count is a
  // duplicate; one with a different count is ignored and counted as
  // conflicting (the first wins).
  void AcceptEndOfStream(uint64_t count, int64_t now_us);

  // Records how a new item (AcceptItem said kNew) ended: failed (counted by
  // reason; at most kMaxReasons distinct reasons, the rest as "other") or
  // dropped. Items that succeeded need no call.
  void RecordFailed(const std::string& reason);
  void RecordDropped() { ++stats_.dropped; }
  static constexpr size_t kMaxReasons = 64;

  const std::string& id() const { return id_; }
  const StreamStats& stats() const { return stats_; }
  uint64_t failed() const { return stats_.failed; }
  uint64_t dropped() const { return stats_.dropped; }
  const std::map<std::string, uint64_t>& failed_by_reason() const {
    return stats_.failed_by_reason;
  }
  bool complete() const { return count_ && in_range_ == *count_; }
  std::optional<uint64_t> expected() const { return count_; }
  uint64_t received() const { return stats_.received; }
  // Distinct items within the stream: below the count once it is known.
  uint64_t unique() const { return count_ ? in_range_ : seen_.size(); }
  // Items taken before the end-of-stream whose seq turned out to be at or
  // beyond its count: a faulty producer. They were written; an error.
  uint64_t beyond_count() const { return count_ ? seen_.size() - in_range_ : 0; }
  uint64_t duplicates() const { return stats_.duplicates; }
  uint64_t out_of_range() const { return stats_.out_of_range; }
  uint64_t beyond_window() const { return stats_.beyond_window; }
  uint64_t conflicting_ends() const { return stats_.conflicting_ends; }
  // New items that arrived after the end-of-stream (it overtook them).
  uint64_t after_end_of_stream() const { return stats_.after_end; }
  // Errors that make the stream's data suspect even if complete: items at
  // or beyond its count (taken before the end-of-stream, or refused after
  // it) and end-of-streams with another count.
  uint64_t errors() const {
    return beyond_count() + out_of_range() + conflicting_ends();
  }
  // With a known count: count - unique below it. Without: a lower bound,
  // the gaps below the highest seq seen.
  uint64_t missing() const;
  // Up to `max` missing sequence numbers (needs the end-of-stream).
  std::vector<uint64_t> MissingSeqs(size_t max) const;
  // True while no item arrived after an item with a higher seq.
  bool in_order() const { return stats_.in_order; }
  // Seconds from the first message to completion (or to `now_us`).
  double ElapsedSeconds(int64_t now_us) const;
  const LatencyHistogram& latency() const { return latency_; }
  const SeqWindow& seen() const { return seen_; }

  // Recovery from the sink's state file: the saved numbers, the saved
  // members, the saved count and latency.
  void RestoreStats(const StreamStats& stats) { stats_ = stats; }
  void RestoreSeen(uint64_t begin, uint64_t end);
  void RestoreCount(uint64_t count);
  LatencyHistogram& mutable_latency() { return latency_; }

 private:
  void CheckComplete(int64_t now_us);

  const std::string id_;
  SeqWindow seen_;
  std::optional<uint64_t> count_;
  uint64_t in_range_ = 0;  // Unique seqs below count_ (valid once known).
  StreamStats stats_;
  LatencyHistogram latency_;
};

}  // namespace sluice

#endif  // SLUICE_SINK_STREAM_TRACKER_H_
