#include "sink/stream_tracker.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace sluice {

bool SeqSet::Insert(uint64_t seq) {
  std::unique_ptr<Chunk>& chunk = chunks_[seq / kChunkBits];
  if (!chunk) chunk = std::make_unique<Chunk>();
  uint64_t bit = seq % kChunkBits;
  uint64_t mask = uint64_t{1} << (bit % 64);
  uint64_t& word = (*chunk)[bit / 64];
  if (word & mask) return false;
  word |= mask;
  ++size_;
  return true;
}

bool SeqSet::Contains(uint64_t seq) const {
  auto it = chunks_.find(seq / kChunkBits);
  if (it == chunks_.end()) return false;
  uint64_t bit = seq % kChunkBits;
  return ((*it->second)[bit / 64] >> (bit % 64)) & 1;
}

uint64_t SeqSet::CountBelow(uint64_t limit) const {
  uint64_t total = 0;
  for (const auto& [index, chunk] : chunks_) {
    uint64_t base = index * kChunkBits;
    if (base >= limit) continue;
    for (size_t w = 0; w < chunk->size(); ++w) {
      uint64_t word_base = base + w * 64;
      if (word_base >= limit) break;
      uint64_t word = (*chunk)[w];
      if (limit - word_base < 64) {
        word &= (uint64_t{1} << (limit - word_base)) - 1;
      }
      total += std::popcount(word);
    }
  }
  return total;
}

std::vector<uint64_t> SeqSet::AbsentBelow(uint64_t limit, size_t max) const {
  std::vector<uint64_t> absent;
  for (uint64_t seq = 0; seq < limit && absent.size() < max; ++seq) {
    auto it = chunks_.find(seq / kChunkBits);
    if (it == chunks_.end()) {  // A whole chunk absent.
      uint64_t end = std::min(limit, (seq / kChunkBits + 1) * kChunkBits);
      for (; seq < end && absent.size() < max; ++seq) absent.push_back(seq);
      --seq;
      continue;
    }
    uint64_t bit = seq % kChunkBits;
    if (!(((*it->second)[bit / 64] >> (bit % 64)) & 1)) absent.push_back(seq);
  }
  return absent;
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

StreamTracker::Outcome StreamTracker::AcceptItem(
    uint64_t seq, int64_t produced_at_us, int64_t now_us,
    std::chrono::steady_clock::time_point now) {
  ++received_;
  if (!first_at_) first_at_ = now;
  if (count_ && seq >= *count_) {
    ++out_of_range_;
    return Outcome::kOutOfRange;
  }
  if (!seen_.Insert(seq)) {
    ++duplicates_;
    return Outcome::kDuplicate;
  }
  if (highest_seq_ && seq < *highest_seq_) in_order_ = false;
  if (!highest_seq_ || seq > *highest_seq_) highest_seq_ = seq;
  if (produced_at_us > 0) latency_.Record(now_us - produced_at_us);
  if (count_) {
    ++in_range_;
    ++after_end_;
    CheckComplete(now);
  }
  return Outcome::kNew;
}

void StreamTracker::AcceptEndOfStream(
    uint64_t count, std::chrono::steady_clock::time_point now) {
  if (count_) {
    if (*count_ != count) ++conflicting_ends_;
    return;
  }
  count_ = count;
  in_range_ = seen_.CountBelow(count);
  if (!first_at_) first_at_ = now;  // An empty stream completes at once.
  CheckComplete(now);
}

void StreamTracker::CheckComplete(std::chrono::steady_clock::time_point now) {
  if (!completed_at_ && complete()) completed_at_ = now;
}

void StreamTracker::RecordFailed(const std::string& reason) {
  ++failed_;
  // The reason comes from the wire: bounded in length and in variety.
  std::string key = reason.empty() ? "error" : reason.substr(0, 64);
  auto it = failed_by_reason_.find(key);
  if (it == failed_by_reason_.end() && failed_by_reason_.size() >= kMaxReasons) {
    it = failed_by_reason_.try_emplace("other", 0).first;
  } else if (it == failed_by_reason_.end()) {
    it = failed_by_reason_.emplace(std::move(key), 0).first;
  }
  ++it->second;
}

uint64_t StreamTracker::missing() const {
  if (count_) return *count_ - in_range_;
  if (!highest_seq_) return 0;
  return *highest_seq_ + 1 - seen_.CountBelow(*highest_seq_ + 1);
}

std::vector<uint64_t> StreamTracker::MissingSeqs(size_t max) const {
  if (!count_) return {};
  return seen_.AbsentBelow(*count_, max);
}

}  // namespace sluice
