#include "producer/inflight_window.h"

#include <algorithm>
#include <cmath>
#include <cassert>

namespace sluice {

InflightWindow::InflightWindow(size_t capacity,
                               const RetransmitOptions& options)
    : capacity_(capacity), options_(options), ring_(capacity),
      last_progress_(Clock::now()) {}

size_t InflightWindow::room() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capacity_ - static_cast<size_t>(next_ - base_);
}

InflightWindow::Entry* InflightWindow::Find(uint64_t key) {
  if (key == kEndKey) return end_.outstanding ? &end_ : nullptr;
  if (key < base_ || key >= next_) return nullptr;
  Entry& e = ring_[key % capacity_];
  return e.outstanding ? &e : nullptr;
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

InflightWindow::Clock::duration InflightWindow::ReorderWindow() const {
  // How far behind another worker may be before an item counts as lost.
  double ms = std::max(static_cast<double>(options_.min_rto.count()),
                       have_rtt_ ? srtt_ms_ / 2 + 4 * rttvar_ms_ : 0.0);
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(ms));
}

size_t InflightWindow::Fitting(std::span<const Item> items) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<uint64_t> base;
  if (data_entries_ > 0) base = base_;
  size_t n = 0;
  for (const Item& item : items) {
    if (!item.end_of_stream) {
      if (!base) base = item.seq;
      if (item.seq - *base >= capacity_) break;
    }
    ++n;
  }
  return n;
}

void InflightWindow::Add(const Item& item, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (data_entries_ == 0 && !end_.outstanding) last_progress_ = now;
  uint64_t key = kEndKey;
  Entry* e = &end_;
  if (!item.end_of_stream) {
    key = item.seq;
    assert(key >= next_ && key - base_ < capacity_);
    if (data_entries_ == 0) base_ = key;
    next_ = key + 1;
    e = &ring_[key % capacity_];
    ++data_entries_;
  }
  e->item = item;
  e->sent_at = now;
  e->attempts = 1;
  e->outstanding = true;
  sent_.push_back({now, key, 1});
}

bool InflightWindow::Release(uint64_t key, Clock::time_point now,
                             std::optional<Clock::duration>& sample) {
  Entry* found = Find(key);
  if (found == nullptr) return false;
  Entry& e = *found;
  // Karn: time first transmissions only. The end-of-stream passes by every
  // op, so it overtakes items as a matter of course: its round trip says
  // nothing of theirs, and its ack nothing of their loss.
  if (e.attempts == 1 && key != kEndKey) {
    Clock::duration rtt = now - e.sent_at;
    if (!sample || rtt > *sample) sample = rtt;
    if (!rack_sent_at_ || e.sent_at > *rack_sent_at_) {
      rack_sent_at_ = e.sent_at;
      rack_rtt_ = rtt;
    }
  }
  e.outstanding = false;
  // Drops the contents; the slot's strings keep their capacity for the
  // item that takes the slot next.
  e.item.payload.clear();
  e.item.more_payloads.clear();
  e.item.failure.reset();
  if (key != kEndKey) {
    --data_entries_;
    while (base_ < next_ && !ring_[base_ % capacity_].outstanding) ++base_;
  }
  return true;
}

size_t InflightWindow::Ack(const AckMessage& ack, Clock::time_point now) {
  size_t released = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<Clock::duration> sample;
    if (ack.complete) {
      released = data_entries_ + (end_.outstanding ? 1 : 0);
      for (uint64_t seq = base_; seq < next_; ++seq) {
        ring_[seq % capacity_] = Entry();
      }
      end_ = Entry();
      base_ = next_;
      data_entries_ = 0;
      sent_.clear();
    } else {
      for (const auto& [begin, end] : ack.ranges) {
        // Only [base_, next_) can be outstanding: the window bounds the walk.
        for (uint64_t seq = std::max(begin, base_); seq < std::min(end, next_);
             ++seq) {
          released += Release(seq, now, sample);
        }
      }
      if (ack.end_of_stream) released += Release(kEndKey, now, sample);
    }
    if (sample) {
      double r = std::chrono::duration<double, std::milli>(*sample).count();
      if (!have_rtt_) {
        srtt_ms_ = r;
        rttvar_ms_ = r / 2;
        have_rtt_ = true;
      } else {
        rttvar_ms_ = 0.75 * rttvar_ms_ + 0.25 * std::abs(srtt_ms_ - r);
        srtt_ms_ = 0.875 * srtt_ms_ + 0.125 * r;
      }
    }
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
    const Sent& s = sent_.front();
    const Entry* e = Find(s.key);
    if (e != nullptr && e->attempts == s.attempts) return;
    sent_.pop_front();
  }
}

std::optional<InflightWindow::Clock::time_point> InflightWindow::NextCheck() {
  PruneSent();
  if (sent_.empty()) return std::nullopt;
  const Sent& oldest = sent_.front();
  // RTO fallback: no progress for an RTO, and the oldest is that old.
  Clock::time_point next = std::max(last_progress_, oldest.at) + Rto();
  // RACK: something sent later was acked.
  if (rack_sent_at_ && oldest.at < *rack_sent_at_) {
    next = std::min(next, oldest.at + rack_rtt_ + ReorderWindow());
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
    bool rack_lost = rack_sent_at_ && oldest.at < *rack_sent_at_ &&
                     now >= oldest.at + rack_rtt_ + ReorderWindow();
    bool rto_lost = now >= std::max(last_progress_, oldest.at) + Rto() ||
                    (rto_fired && now >= oldest.at + Rto());
    if (!rack_lost && !rto_lost) break;
    if (rto_lost && !rack_lost) rto_fired = true;
    sent_.pop_front();
    Entry& e = *Find(oldest.key);
    e.attempts += 1;
    e.sent_at = now;
    sent_.push_back({now, oldest.key, e.attempts});
    out.push_back(e.item);
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

std::string InflightWindow::DescribeOutstanding(size_t max_listed) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> lowest;
  for (uint64_t seq = base_; seq < next_ && lowest.size() < max_listed; ++seq) {
    if (ring_[seq % capacity_].outstanding) lowest.push_back(seq);
  }
  std::string text = std::to_string(data_entries_) + " items";
  if (!lowest.empty()) {
    text += " (seq";
    for (uint64_t seq : lowest) text += " " + std::to_string(seq);
    text += data_entries_ > lowest.size() ? " ...)" : ")";
  }
  if (end_.outstanding) text += " and the end-of-stream";
  return text;
}

}  // namespace sluice
