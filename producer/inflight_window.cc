#include "producer/inflight_window.h"

#include <algorithm>
#include <cmath>
#include <cassert>

namespace sluice {

namespace {

constexpr int kMinOverdueFactor = 2;
constexpr int kMaxOverdueFactor = 8;
// Quiet periods (of the longest-RTT window) before the factor shrinks.
constexpr int kQuietPeriodsToShrink = 16;
constexpr double kMinTargetWaitUs = 1000;
// Round-robin hands items to workers in turn, not to the one with a free
// slot, so a worker keeps a few ready: measured, 0.5 x the op time per item
// left 55% of 40 slots busy, 2 x 90%, 4 x 95% (20 workers of 2 threads).
constexpr double kTargetWaitPerOpTime = 4;
// And at least one gap between acks: items done and waiting for their ack
// are outside the workers, and a worker whose queue drains before the next
// ack idles (one worker of 2 threads, 1 ms per item, 20 ms between acks:
// a target of 4 x the op time gave 938 items/s of 2,000).
constexpr double kTargetWaitPerAckGap = 1;
// Queueing that no stage measures (a sink slower than the stages, frames
// piling up in socket buffers) shows as round trips longer than the
// shortest recent one. The limit keeps that excess under this much: far
// below the minimum RTO, so that however the queue splits over parallel
// paths, an item on the slowest path is not taken for lost; and above what
// a pipeline of cheap ops needs to stay busy (measured: the zero-latency
// chain's round trip is about 13 ms at 40,000 items outstanding).
constexpr double kMaxExcessRttUs = 100'000;
// The shortest round trip is the least of this period and the one before.
constexpr auto kMinRttPeriod = std::chrono::seconds(10);
// Released slots keep payload buffers up to this size for the next item.
constexpr size_t kKeptPayloadBytes = 256;

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

InflightWindow::InflightWindow(size_t capacity,
                               const RetransmitOptions& options,
                               const FlowOptions& flow)
    : capacity_(capacity), options_(options), ring_(capacity),
      span_(flow.span > 0 ? flow.span : capacity), flow_(flow),
      limit_(static_cast<double>(std::clamp(flow.initial_limit, size_t{1}, capacity))),
      last_progress_(Clock::now()) {
  rtt_period_start_ = rtt_min_period_start_ = round_start_ = last_dsack_ = last_progress_;
}

size_t InflightWindow::room() const {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t span_room = span_ - (next_ - base_);
  const size_t flow_room = FlowRoom();
  if (bytes_ >= flow_.max_bytes) return 0;
  return static_cast<size_t>(std::min<uint64_t>(span_room, flow_room));
}

size_t InflightWindow::FlowRoom() const {
  // Stragglers wait (for a retry, mostly) without holding an op's thread:
  // they are not what the limit bounds, but at most `capacity` of them are
  // kept, so that the window's memory stays bounded.
  if (stragglers_.size() >= capacity_) return 0;
  const size_t counted = data_entries_ - stragglers_.size();
  const size_t limit = static_cast<size_t>(limit_);
  return limit > counted ? limit - counted : 0;
}

size_t InflightWindow::limit() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(limit_);
}

size_t InflightWindow::FrameItems(size_t batch_items) const {
  std::lock_guard<std::mutex> lock(mu_);
  // Before the first round trip nothing says how fast the workers are:
  // one item per frame spreads the first burst evenly over them.
  if (!have_rtt_ && flow_.peers > 1) return 1;
  const size_t per_peer = static_cast<size_t>(limit_) / (8 * std::max<size_t>(1, flow_.peers));
  return std::clamp<size_t>(per_peer, 1, std::max<size_t>(1, batch_items));
}

InflightWindow::Entry* InflightWindow::Find(uint64_t key) {
  if (key == kEndKey) return end_.outstanding ? &end_ : nullptr;
  if (key < base_ || key >= next_) return nullptr;
  if (key < ring_lo_) {
    auto it = stragglers_.find(key);
    return it == stragglers_.end() ? nullptr : &it->second;
  }
  Entry& e = ring_[key % capacity_];
  return e.outstanding ? &e : nullptr;
}

Item InflightWindow::ItemOf(uint64_t key, const Entry& e) const {
  if (key == kEndKey) return Item::EndOfStream(stream_, end_count_);
  Item item;
  item.stream = stream_;
  item.seq = key;
  item.payload = e.payload;
  item.produced_at_us = e.produced_at_us;
  if (auto it = failures_.find(key); it != failures_.end()) item.failure = it->second;
  return item;
}

InflightWindow::Clock::duration InflightWindow::Rto() const {
  double base = options_.initial_rto.count();
  if (have_rtt_) base = srtt_ms_ + std::max(1.0, 4 * rttvar_ms_);
  const double max = static_cast<double>(options_.max_rto.count());
  base = std::clamp(base, static_cast<double>(options_.min_rto.count()), max);
  double backed_off = std::min(base * std::pow(2.0, std::min(backoff_, 20)), max);
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(backed_off));
}

InflightWindow::Clock::duration InflightWindow::Overdue() const {
  const Clock::duration longest = std::max(rtt_max_now_, rtt_max_before_);
  if (longest == Clock::duration::zero()) return Rto();
  return overdue_factor_ * longest + options_.min_rto;
}

InflightWindow::Clock::duration InflightWindow::Period() const {
  return std::max<Clock::duration>(
      std::chrono::seconds(1),
      std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double, std::milli>(8 * srtt_ms_)));
}

void InflightWindow::NoteRtt(const RttSamples& sample, Clock::time_point now) {
  if (now - rtt_period_start_ >= Period()) {
    rtt_max_before_ = rtt_max_now_;
    rtt_max_now_ = Clock::duration::zero();
    rtt_period_start_ = now;
  }
  rtt_max_now_ = std::max(rtt_max_now_, *sample.longest);
  if (now - rtt_min_period_start_ >= kMinRttPeriod) {
    rtt_min_before_ = rtt_min_now_;
    rtt_min_now_.reset();
    rtt_min_period_start_ = now;
  }
  if (!rtt_min_now_ || *sample.shortest < *rtt_min_now_) {
    rtt_min_now_ = sample.shortest;
  }
}

double InflightWindow::ExcessRttUs(double rtt_ms) const {
  std::optional<Clock::duration> shortest = rtt_min_now_;
  if (rtt_min_before_ && (!shortest || *rtt_min_before_ < *shortest)) {
    shortest = rtt_min_before_;
  }
  if (!shortest) return 0;
  return std::max(0.0, rtt_ms - Ms(*shortest)) * 1000;
}

void InflightWindow::Adapt(const AckMessage& ack, size_t released,
                           std::optional<Clock::duration> shortest,
                           Clock::time_point now) {
  // D-SACK: a duplicate reached the sink. If we resent anything, a resend
  // was needless: wait longer before the next (once per round trip).
  if (ack.duplicates > 0) {
    duplicates_reported_ += ack.duplicates;
    if (retransmits_ > 0 &&
        Ms(now - last_dsack_) >= std::max(srtt_ms_, 1.0)) {
      overdue_factor_ = std::min(kMaxOverdueFactor, overdue_factor_ + 1);
      last_dsack_ = now;
    }
  } else if (overdue_factor_ > kMinOverdueFactor &&
             now - last_dsack_ >= kQuietPeriodsToShrink * Period()) {
    --overdue_factor_;
    last_dsack_ = now;
  }
  if (released == 0 || ack.complete) return;

  // How long the newly acked items waited for, and spent in, slow ops.
  double queued = 0, op = 0;
  if (ack.timed_items > 0) {
    queued = static_cast<double>(ack.queued_us) / static_cast<double>(ack.timed_items);
    op = static_cast<double>(ack.op_us) / static_cast<double>(ack.timed_items);
    have_timing_ = true;
  }
  queued_us_ = 0.75 * queued_us_ + 0.25 * queued;
  op_us_ = 0.75 * op_us_ + 0.25 * op;
  // The time between acks. The sink acks in batches (--ack-interval-ms),
  // so the window opens in bursts, and an item that is done waits for its
  // ack outside any worker. A worker must hold enough to stay busy from one
  // ack to the next: a burst that drains in one gap waits half a gap on
  // average, so a target below the gap starves the workers. Gaps with the
  // window empty in between say nothing (the load was low); one sample may
  // move the estimate at most fourfold (a stall is not the cadence).
  if (last_release_at_ && had_outstanding_) {
    double gap = Ms(now - *last_release_at_) * 1000;
    if (ack_gap_us_ > 0) gap = std::min(gap, 4 * ack_gap_us_);
    ack_gap_us_ = ack_gap_us_ == 0 ? gap : 0.875 * ack_gap_us_ + 0.125 * gap;
  }
  last_release_at_ = now;
  had_outstanding_ = data_entries_ > 0;
  const double target = std::max({kMinTargetWaitUs, op_us_ * kTargetWaitPerOpTime,
                                  ack_gap_us_ * kTargetWaitPerAckGap});
  const double capacity = static_cast<double>(capacity_);
  const double floor = static_cast<double>(std::max(flow_.min_limit, flow_.peers));
  const double excess = have_rtt_ ? ExcessRttUs(floor_ms_) : 0;

  // Slow start: grow by what each ack releases (doubling per round trip)
  // until items start to wait, or a round trip (this ack's, not yet the
  // smoothed one, which lags while a queue builds) says they queue.
  if (slow_start_) {
    const double latest = shortest ? ExcessRttUs(Ms(*shortest)) : 0;
    if (queued_us_ <= target && excess <= kMaxExcessRttUs &&
        latest <= kMaxExcessRttUs) {
      limit_ = std::min(capacity, limit_ + static_cast<double>(released));
    } else {
      slow_start_ = false;
    }
  }
  // Throughput, and the correction, once per round trip (at least 10 ms).
  round_released_ += released;
  const double round_ms = std::max(10.0, have_rtt_ ? srtt_ms_ : 0.0);
  const double elapsed_ms = Ms(now - round_start_);
  if (elapsed_ms < round_ms) return;
  const double round_rate = static_cast<double>(round_released_) * 1000 / elapsed_ms;
  rate_ = rate_ == 0 ? round_rate : 0.5 * rate_ + 0.5 * round_rate;
  round_start_ = now;
  round_released_ = 0;
  if (slow_start_) return;
  // Little's law: items waiting = rate x wait. Move halfway to the target,
  // at most halving or growing by half at a time. Of the two waits, that
  // for slow ops (if any are timed) and the round trip's excess, the one
  // that asks for fewer items outstanding wins.
  double step = 0.5 * rate_ * (kMaxExcessRttUs - excess) / 1e6;
  if (have_timing_) step = std::min(step, 0.5 * rate_ * (target - queued_us_) / 1e6);
  limit_ = std::clamp(limit_ + step, limit_ * 0.5, limit_ * 1.5);
  limit_ = std::clamp(limit_, std::min(floor, capacity), capacity);
}

size_t InflightWindow::Fitting(std::span<const Item> items) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<uint64_t> base;
  if (data_entries_ > 0) base = base_;
  size_t flow_room = FlowRoom();
  size_t bytes = bytes_;
  size_t n = 0;
  for (const Item& item : items) {
    if (!item.end_of_stream) {
      if (!base) base = item.seq;
      if (item.seq - *base >= span_ || flow_room == 0) break;
      if (bytes + item.payload.size() > flow_.max_bytes &&
          (data_entries_ > 0 || n > 0)) {
        break;
      }
      --flow_room;
      bytes += item.payload.size();
    }
    ++n;
  }
  return n;
}

void InflightWindow::Add(std::span<const Item> items, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Item& item : items) AddOne(item, now);
}

void InflightWindow::AddOne(const Item& item, Clock::time_point now) {
  if (data_entries_ == 0 && !end_.outstanding) last_progress_ = now;
  uint64_t key = kEndKey;
  Entry* e = &end_;
  if (!item.end_of_stream) {
    key = item.seq;
    assert(key >= next_ && key - base_ < span_);
    if (data_entries_ == 0) {
      base_ = ring_lo_ = key;
    } else if (key - ring_lo_ >= capacity_) {
      MoveStragglers(key - capacity_ + 1);
    }
    next_ = key + 1;
    e = &ring_[key % capacity_];
    ++data_entries_;
  }
  if (stream_.empty()) stream_ = item.stream;
  assert(item.stream == stream_);
  if (item.end_of_stream) {
    end_count_ = item.count;
  } else {
    e->payload = item.payload;  // Reuses the slot's buffer.
    bytes_ += e->payload.size();
    if (item.failure) failures_[key] = item.failure;
    e->produced_at_us = item.produced_at_us;
  }
  e->sent_at = now;
  e->attempts = 1;
  e->outstanding = true;
  if (!sent_.empty() && key != kEndKey) {
    Sent& last = sent_.back();
    if (last.at == now && last.attempts == 1 && last.key != kEndKey &&
        last.key + last.count == key) {
      ++last.count;
      return;
    }
  }
  sent_.push_back({now, key, 1, 1});
}

void InflightWindow::MoveStragglers(uint64_t lo) {
  for (uint64_t seq = ring_lo_; seq < std::min(lo, next_); ++seq) {
    Entry& e = ring_[seq % capacity_];
    if (e.outstanding) {
      stragglers_.emplace(seq, std::move(e));
      e = Entry();
    }
  }
  ring_lo_ = lo;
}

bool InflightWindow::Release(uint64_t key, Clock::time_point now,
                             RttSamples& sample) {
  Entry* found = Find(key);
  if (found == nullptr) return false;
  Entry& e = *found;
  // Karn: time first transmissions only. The end-of-stream passes by every
  // op, so it overtakes items as a matter of course: its round trip says
  // nothing of theirs, and its ack nothing of their loss.
  if (e.attempts == 1 && key != kEndKey) {
    Clock::duration rtt = now - e.sent_at;
    if (!sample.longest || rtt > *sample.longest) sample.longest = rtt;
    if (!sample.shortest || rtt < *sample.shortest) sample.shortest = rtt;
    if (!latest_acked_sent_at_ || e.sent_at > *latest_acked_sent_at_) {
      latest_acked_sent_at_ = e.sent_at;
    }
  }
  e.outstanding = false;
  if (!failures_.empty()) failures_.erase(key);
  if (key != kEndKey) {
    bytes_ -= e.payload.size();
    // A short payload's buffer serves the item that takes the slot next; a
    // long one's is let go, so that idle slots hold little.
    if (e.payload.capacity() > kKeptPayloadBytes) {
      std::string().swap(e.payload);
    } else {
      e.payload.clear();
    }
    --data_entries_;
    if (key < ring_lo_) stragglers_.erase(key);
    if (!stragglers_.empty()) {
      base_ = stragglers_.begin()->first;
    } else {
      base_ = std::max(base_, ring_lo_);
      while (base_ < next_ && !ring_[base_ % capacity_].outstanding) ++base_;
    }
  }
  return true;
}

size_t InflightWindow::Ack(const AckMessage& ack, Clock::time_point now) {
  size_t released = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RttSamples sample;
    if (ack.complete) {
      released = data_entries_ + (end_.outstanding ? 1 : 0);
      for (uint64_t seq = std::max(base_, ring_lo_); seq < next_; ++seq) {
        ring_[seq % capacity_] = Entry();
      }
      stragglers_.clear();
      end_ = Entry();
      failures_.clear();
      bytes_ = 0;
      base_ = next_;
      data_entries_ = 0;
      sent_.clear();
    } else {
      for (const auto& [begin, end] : ack.ranges) {
        // Below the ring only stragglers can be outstanding; in it, only
        // [ring_lo_, next_): the capacity bounds the walk.
        for (auto it = stragglers_.lower_bound(begin);
             it != stragglers_.end() && it->first < end;) {
          const uint64_t seq = (it++)->first;  // Release() erases it.
          released += Release(seq, now, sample);
        }
        for (uint64_t seq = std::max({begin, base_, ring_lo_});
             seq < std::min(end, next_); ++seq) {
          released += Release(seq, now, sample);
        }
      }
      if (ack.end_of_stream) released += Release(kEndKey, now, sample);
    }
    if (sample.longest) {
      NoteRtt(sample, now);
      const double r = Ms(*sample.longest);
      const double shortest = Ms(*sample.shortest);
      if (!have_rtt_) {
        srtt_ms_ = r;
        rttvar_ms_ = r / 2;
        floor_ms_ = shortest;
        have_rtt_ = true;
      } else {
        rttvar_ms_ = 0.75 * rttvar_ms_ + 0.25 * std::abs(srtt_ms_ - r);
        srtt_ms_ = 0.875 * srtt_ms_ + 0.125 * r;
        floor_ms_ = 0.875 * floor_ms_ + 0.125 * shortest;
      }
    }
    Adapt(ack, released, sample.shortest, now);
    if (released > 0) {
      last_progress_ = now;
      backoff_ = 0;
    }
  }
  if (released > 0) acked_.notify_all();
  return released;
}

void InflightWindow::PruneSent() {
  while (!sent_.empty()) {
    Sent& s = sent_.front();
    for (; s.count > 0; ++s.key, --s.count) {
      const Entry* e = Find(s.key);
      if (e != nullptr && e->attempts == s.attempts) return;
    }
    sent_.pop_front();
  }
}

std::optional<InflightWindow::Clock::time_point> InflightWindow::NextCheck() {
  PruneSent();
  if (sent_.empty()) return std::nullopt;
  const Sent& oldest = sent_.front();
  // RTO fallback: no progress for an RTO, and the oldest is that old.
  Clock::time_point next = std::max(last_progress_, oldest.at) + Rto();
  // Overdue: something sent later was acked.
  if (latest_acked_sent_at_ && oldest.at < *latest_acked_sent_at_) {
    next = std::min(next, oldest.at + Overdue());
  }
  return next;
}

size_t InflightWindow::TakeExpired(Clock::time_point now, size_t max,
                                   std::vector<Item>& out) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t taken = 0;
  bool rto_fired = false;
  while (taken < max) {
    PruneSent();
    if (sent_.empty()) break;
    const Sent oldest = sent_.front();
    bool overdue = latest_acked_sent_at_ && oldest.at < *latest_acked_sent_at_ &&
                   now >= oldest.at + Overdue();
    bool rto_lost = now >= std::max(last_progress_, oldest.at) + Rto() ||
                    (rto_fired && now >= oldest.at + Rto());
    if (!overdue && !rto_lost) break;
    if (rto_lost && !overdue) rto_fired = true;
    Sent& front = sent_.front();
    ++front.key;
    if (--front.count == 0) sent_.pop_front();
    Entry& e = *Find(oldest.key);
    e.attempts += 1;
    e.sent_at = now;
    sent_.push_back({now, oldest.key, 1, e.attempts});
    out.push_back(ItemOf(oldest.key, e));
    ++taken;
  }
  if (rto_fired) ++backoff_;  // Until an ack makes progress again.
  retransmits_ += taken;
  return taken;
}

std::optional<InflightWindow::Clock::time_point> InflightWindow::NextExpiry() {
  std::lock_guard<std::mutex> lock(mu_);
  return NextCheck();
}

void InflightWindow::WaitForAck(std::optional<Clock::time_point> deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  Clock::time_point before = last_progress_;
  auto progressed = [&] { return last_progress_ != before; };
  if (deadline) {
    acked_.wait_until(lock, *deadline, progressed);
  } else {
    acked_.wait(lock, progressed);
  }
}

bool InflightWindow::empty() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_entries_ == 0 && !end_.outstanding;
}

size_t InflightWindow::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_entries_ + (end_.outstanding ? 1 : 0);
}

InflightWindow::Clock::time_point InflightWindow::last_progress() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_progress_;
}

std::chrono::milliseconds InflightWindow::rto() const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::chrono::duration_cast<std::chrono::milliseconds>(Rto());
}

uint64_t InflightWindow::retransmits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return retransmits_;
}

uint64_t InflightWindow::duplicates_reported() const {
  std::lock_guard<std::mutex> lock(mu_);
  return duplicates_reported_;
}

int InflightWindow::overdue_factor() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overdue_factor_;
}

double InflightWindow::queued_us() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_us_;
}

std::string InflightWindow::DescribeOutstanding(size_t max_listed) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> lowest;
  for (auto it = stragglers_.begin();
       it != stragglers_.end() && lowest.size() < max_listed; ++it) {
    lowest.push_back(it->first);
  }
  for (uint64_t seq = std::max(base_, ring_lo_);
       seq < next_ && lowest.size() < max_listed; ++seq) {
    if (ring_[seq % capacity_].outstanding) lowest.push_back(seq);
  }
  std::string text = std::to_string(data_entries_) + " items";
  if (!lowest.empty()) {
    text += " (seq";
    for (uint64_t seq : lowest) text.append(" ").append(std::to_string(seq));
    text += data_entries_ > lowest.size() ? " ...)" : ")";
  }
  if (end_.outstanding) text += " and the end-of-stream";
  return text;
}

}  // namespace sluice
