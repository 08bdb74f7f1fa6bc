#include "sink/stream_tracker.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <optional>

namespace sluice {

namespace {

constexpr uint64_t kAllOnes = ~uint64_t{0};

// Bits [from, to) of a word, 0 <= from <= to <= 64.
uint64_t BitsBetween(uint64_t from, uint64_t to) {
  if (from >= to) return 0;
  uint64_t upper = to == 64 ? kAllOnes : (uint64_t{1} << to) - 1;
  return upper & ~((uint64_t{1} << from) - 1);
}

}  // namespace

uint64_t SeqWindow::lowest_absent() const {
  if (words_.empty()) return origin_;
  return origin_ + std::countr_one(words_.front());  // Front is never full.
}

SeqWindow::Insert SeqWindow::Add(uint64_t seq) {
  if (seq < origin_) return Insert::kDuplicate;
  const uint64_t low = lowest_absent();
  if (seq >= low && seq - low >= window_) return Insert::kBeyondWindow;
  const uint64_t index = (seq - origin_) / 64;
  if (index >= words_.size()) words_.resize(index + 1, 0);
  const uint64_t mask = uint64_t{1} << ((seq - origin_) % 64);
  uint64_t& word = words_[index];
  if (word & mask) return Insert::kDuplicate;
  word |= mask;
  ++size_;
  while (!words_.empty() && words_.front() == kAllOnes) {
    words_.pop_front();
    origin_ += 64;
  }
  return Insert::kNew;
}

bool SeqWindow::Contains(uint64_t seq) const {
  if (seq < origin_) return true;
  const uint64_t index = (seq - origin_) / 64;
  if (index >= words_.size()) return false;
  return (words_[index] >> ((seq - origin_) % 64)) & 1;
}

uint64_t SeqWindow::CountBelow(uint64_t limit) const {
  if (limit <= origin_) return limit;
  uint64_t total = origin_;
  for (size_t i = 0; i < words_.size(); ++i) {
    const uint64_t base = origin_ + i * 64;
    if (base >= limit) break;
    uint64_t word = words_[i];
    if (limit - base < 64) word &= BitsBetween(0, limit - base);
    total += std::popcount(word);
  }
  return total;
}

std::vector<uint64_t> SeqWindow::AbsentBelow(uint64_t limit, size_t max) const {
  std::vector<uint64_t> absent;
  for (uint64_t seq = lowest_absent(); seq < limit && absent.size() < max; ++seq) {
    if (!Contains(seq)) absent.push_back(seq);
  }
  return absent;
}

void SeqWindow::ForEachRange(
    const std::function<void(uint64_t, uint64_t)>& fn) const {
  std::optional<uint64_t> begin;
  if (origin_ > 0) begin = 0;
  for (size_t i = 0; i < words_.size(); ++i) {
    const uint64_t word = words_[i];
    if (word == 0 && !begin) continue;
    for (uint64_t bit = 0; bit < 64; ++bit) {
      const bool member = (word >> bit) & 1;
      const uint64_t seq = origin_ + i * 64 + bit;
      if (member && !begin) begin = seq;
      if (!member && begin) {
        fn(*begin, seq);
        begin.reset();
      }
    }
  }
  if (begin) fn(*begin, origin_ + words_.size() * 64);
}

void SeqWindow::AddRange(uint64_t begin, uint64_t end) {
  while (begin < end) {
    const uint64_t low = lowest_absent();
    if (begin > low) {
      (void)Add(begin++);
      continue;
    }
    if (end <= low) return;  // All members already.
    // [low, end) all become members: count the new ones, drop the words
    // wholly below `end`, then set the bits of the one it ends in.
    size_ += (end - low) - (CountBelow(end) - low);
    while (!words_.empty() && origin_ + 64 <= end) {
      words_.pop_front();
      origin_ += 64;
    }
    if (words_.empty()) origin_ = end / 64 * 64;
    if (end > origin_) {
      if (words_.empty()) words_.push_back(0);
      words_.front() |= BitsBetween(0, end - origin_);
    }
    while (!words_.empty() && words_.front() == kAllOnes) {
      words_.pop_front();
      origin_ += 64;
    }
    return;
  }
}

int LatencyHistogram::BucketOf(uint64_t v) {
  constexpr uint64_t kSub = 1 << kSubBits;
  if (v < kSub) return static_cast<int>(v);
  int exponent = 63 - std::countl_zero(v);  // >= kSubBits
  int shift = exponent - kSubBits;
  uint64_t sub = (v >> shift) & (kSub - 1);
  return static_cast<int>((shift + 1) * kSub + sub);
}

double LatencyHistogram::MidpointOf(int bucket) {
  constexpr int kSub = 1 << kSubBits;
  if (bucket < kSub) return bucket;
  int shift = bucket / kSub - 1;
  uint64_t sub = bucket % kSub;
  double low = static_cast<double>((kSub + sub) << shift);
  return low + static_cast<double>(uint64_t{1} << shift) / 2;
}

void LatencyHistogram::Record(int64_t micros) {
  uint64_t v = micros > 0 ? static_cast<uint64_t>(micros) : 0;
  ++buckets_[std::min(BucketOf(v), kBuckets - 1)];
  ++count_;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (int i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
}

std::vector<std::pair<uint32_t, uint64_t>> LatencyHistogram::Buckets() const {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (int i = 0; i < kBuckets; ++i) {
    if (buckets_[i] > 0) out.emplace_back(static_cast<uint32_t>(i), buckets_[i]);
  }
  return out;
}

void LatencyHistogram::AddBucket(uint32_t index, uint64_t n) {
  if (index >= static_cast<uint32_t>(kBuckets)) return;
  buckets_[index] += n;
  count_ += n;
}

double LatencyHistogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * count_));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return MidpointOf(i);
  }
  return MidpointOf(kBuckets - 1);
}

StreamTracker::Outcome StreamTracker::AcceptItem(uint64_t seq,
                                                 int64_t produced_at_us,
                                                 int64_t now_us) {
  ++stats_.received;
  if (stats_.first_unix_us == 0) stats_.first_unix_us = now_us;
  if (count_ && seq >= *count_) {
    ++stats_.out_of_range;
    return Outcome::kOutOfRange;
  }
  switch (seen_.Add(seq)) {
    case SeqWindow::Insert::kDuplicate:
      ++stats_.duplicates;
      return Outcome::kDuplicate;
    case SeqWindow::Insert::kBeyondWindow:
      ++stats_.beyond_window;
      return Outcome::kBeyondWindow;
    case SeqWindow::Insert::kNew:
      break;
  }
  if (stats_.highest_seq && seq < *stats_.highest_seq) stats_.in_order = false;
  if (!stats_.highest_seq || seq > *stats_.highest_seq) stats_.highest_seq = seq;
  if (produced_at_us > 0) latency_.Record(now_us - produced_at_us);
  if (count_) {
    ++in_range_;
    ++stats_.after_end;
    CheckComplete(now_us);
  }
  return Outcome::kNew;
}

void StreamTracker::AcceptEndOfStream(uint64_t count, int64_t now_us) {
  if (count_) {
    if (*count_ != count) ++stats_.conflicting_ends;
    return;
  }
  if (stats_.first_unix_us == 0) stats_.first_unix_us = now_us;
  RestoreCount(count);
  CheckComplete(now_us);  // An empty stream completes at once.
}

void StreamTracker::RestoreCount(uint64_t count) {
  count_ = count;
  in_range_ = seen_.CountBelow(count);
}

void StreamTracker::RestoreSeen(uint64_t begin, uint64_t end) {
  seen_.AddRange(begin, end);
  if (count_) in_range_ = seen_.CountBelow(*count_);
}

void StreamTracker::CheckComplete(int64_t now_us) {
  if (stats_.completed_unix_us == 0 && complete()) {
    stats_.completed_unix_us = std::max<int64_t>(now_us, 1);
  }
}

double StreamTracker::ElapsedSeconds(int64_t now_us) const {
  if (stats_.first_unix_us == 0) return 0;
  int64_t end = stats_.completed_unix_us != 0 ? stats_.completed_unix_us : now_us;
  return std::max<int64_t>(0, end - stats_.first_unix_us) / 1e6;
}

void StreamTracker::RecordFailed(const std::string& reason) {
  ++stats_.failed;
  // The reason comes from the wire: bounded in length and in variety.
  std::string key = reason.empty() ? "error" : reason.substr(0, 64);
  auto& reasons = stats_.failed_by_reason;
  auto it = reasons.find(key);
  if (it == reasons.end() && reasons.size() >= kMaxReasons) {
    it = reasons.try_emplace("other", 0).first;
  } else if (it == reasons.end()) {
    it = reasons.emplace(std::move(key), 0).first;
  }
  ++it->second;
}

uint64_t StreamTracker::missing() const {
  if (count_) return *count_ - in_range_;
  if (!stats_.highest_seq) return 0;
  return *stats_.highest_seq + 1 - seen_.CountBelow(*stats_.highest_seq + 1);
}

std::vector<uint64_t> StreamTracker::MissingSeqs(size_t max) const {
  if (!count_) return {};
  return seen_.AbsentBelow(*count_, max);
}

}  // namespace sluice
