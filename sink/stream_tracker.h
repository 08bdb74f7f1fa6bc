// sink/stream_tracker.h
//
// What the sink knows about one stream, and the rule that decides completion
// (docs/design.md, "Wire rules"): a stream is complete when its end-of-stream has
// been seen and every sequence number below its count has arrived. This holds
// for any number of workers and any arrival order, including an end-of-stream
// that overtakes items.
//
// Sequence numbers come from the wire, so memory must not follow their
// values: SeqSet stores seen numbers as a sparse set of fixed-size bitmaps,
// costing memory per region actually touched.
//
// Thread safety: none; the sink's accounting thread owns its trackers.
#ifndef SLUICE_SINK_STREAM_TRACKER_H_
#define SLUICE_SINK_STREAM_TRACKER_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace sluice {

// A set of uint64 sequence numbers.
class SeqSet {
 public:
  // Adds `seq`; false if it was already present.
  bool Insert(uint64_t seq);
  bool Contains(uint64_t seq) const;
  uint64_t size() const { return size_; }
  // How many members are below `limit`.
  uint64_t CountBelow(uint64_t limit) const;
  // Members in [0, limit) that are absent, at most `max` of them, ascending.
  std::vector<uint64_t> AbsentBelow(uint64_t limit, size_t max) const;

 private:
  static constexpr uint64_t kChunkBits = 1 << 14;  // 2 KiB per chunk.
  using Chunk = std::array<uint64_t, kChunkBits / 64>;
  std::unordered_map<uint64_t, std::unique_ptr<Chunk>> chunks_;
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

 private:
  static constexpr int kSubBits = 5;
  static constexpr int kBuckets = (64 - kSubBits) * (1 << kSubBits);
  static int BucketOf(uint64_t v);
  static double MidpointOf(int bucket);
  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
};

class StreamTracker {
 public:
  enum class Outcome { kNew, kDuplicate, kOutOfRange };

  explicit StreamTracker(std::string id) : id_(std::move(id)) {}

  // Records a data item that arrived at `now_us` (wall clock). kOutOfRange if
  // its seq is at or beyond a known count (dropped, counted).
  Outcome AcceptItem(uint64_t seq, int64_t produced_at_us, int64_t now_us,
                     std::chrono::steady_clock::time_point now);
  // Records the end-of-stream. A second one with the same count is a
  // duplicate; one with a different count is ignored and counted as
  // conflicting (the first wins).
  void AcceptEndOfStream(uint64_t count,
                         std::chrono::steady_clock::time_point now);

  // Records how a new item (AcceptItem said kNew) ended: failed (counted by
  // reason; at most kMaxReasons distinct reasons, the rest as "other") or
  // dropped. Items that succeeded need no call.
  void RecordFailed(const std::string& reason);
  void RecordDropped() { ++dropped_; }
  static constexpr size_t kMaxReasons = 64;

  const std::string& id() const { return id_; }
  uint64_t failed() const { return failed_; }
  uint64_t dropped() const { return dropped_; }
  const std::map<std::string, uint64_t>& failed_by_reason() const {
    return failed_by_reason_;
  }
  bool complete() const { return count_ && in_range_ == *count_; }
  std::optional<uint64_t> expected() const { return count_; }
  uint64_t received() const { return received_; }
  uint64_t unique() const { return seen_.size(); }
  uint64_t duplicates() const { return duplicates_; }
  uint64_t out_of_range() const { return out_of_range_; }
  uint64_t conflicting_ends() const { return conflicting_ends_; }
  // New items that arrived after the end-of-stream (it overtook them).
  uint64_t after_end_of_stream() const { return after_end_; }
  // With a known count: count - unique below it. Without: a lower bound,
  // the gaps below the highest seq seen.
  uint64_t missing() const;
  // Up to `max` missing sequence numbers (needs the end-of-stream).
  std::vector<uint64_t> MissingSeqs(size_t max) const;
  // True while no item arrived after an item with a higher seq.
  bool in_order() const { return in_order_; }
  std::optional<std::chrono::steady_clock::time_point> first_item_at() const {
    return first_at_;
  }
  std::optional<std::chrono::steady_clock::time_point> completed_at() const {
    return completed_at_;
  }
  const LatencyHistogram& latency() const { return latency_; }

 private:
  void CheckComplete(std::chrono::steady_clock::time_point now);

  const std::string id_;
  SeqSet seen_;
  std::optional<uint64_t> count_;
  uint64_t in_range_ = 0;  // Unique seqs below count_ (valid once known).
  uint64_t received_ = 0;
  uint64_t duplicates_ = 0;
  uint64_t out_of_range_ = 0;
  uint64_t conflicting_ends_ = 0;
  uint64_t after_end_ = 0;
  uint64_t failed_ = 0;
  uint64_t dropped_ = 0;
  std::map<std::string, uint64_t> failed_by_reason_;
  std::optional<uint64_t> highest_seq_;
  bool in_order_ = true;
  std::optional<std::chrono::steady_clock::time_point> first_at_;
  std::optional<std::chrono::steady_clock::time_point> completed_at_;
  LatencyHistogram latency_;
};

}  // namespace sluice

#endif  // SLUICE_SINK_STREAM_TRACKER_H_
