#include "producer/inflight_window.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace sluice {

InflightWindow::InflightWindow(size_t capacity,
                               const RetransmitOptions& options)
    : capacity_(capacity), options_(options), last_progress_(Clock::now()) {
  entries_.reserve(capacity + 1);
}

size_t InflightWindow::room() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capacity_ > data_entries_ ? capacity_ - data_entries_ : 0;
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

void InflightWindow::Add(const Item& item, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t key = item.end_of_stream ? kEndKey : item.seq;
  if (entries_.empty()) last_progress_ = now;
  auto [it, inserted] = entries_.try_emplace(key, Entry{item, now, 1});
  if (!inserted) return;  // Already outstanding (a caller bug); keep the first.
  if (!item.end_of_stream) ++data_entries_;
  sent_.push_back({now, key, 1});
}

bool InflightWindow::Release(uint64_t key, Clock::time_point now,
                             std::optional<Clock::duration>& sample) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  const Entry& e = it->second;
  if (e.attempts == 1) {  // Karn: time first transmissions only.
    Clock::duration rtt = now - e.sent_at;
    if (!sample || rtt > *sample) sample = rtt;
    if (!rack_sent_at_ || e.sent_at > *rack_sent_at_) {
      rack_sent_at_ = e.sent_at;
      rack_rtt_ = rtt;
    }
  }
  if (key != kEndKey) --data_entries_;
  entries_.erase(it);
  return true;
}

size_t InflightWindow::Ack(const AckMessage& ack, Clock::time_point now) {
  size_t released = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<Clock::duration> sample;
    if (ack.complete) {
      released = entries_.size();
      entries_.clear();
      data_entries_ = 0;
      sent_.clear();
    } else {
      for (const auto& [begin, end] : ack.ranges) {
        if (end - begin > entries_.size()) {
          // A wide range: walk what is outstanding instead of the range.
          for (auto it = entries_.begin(); it != entries_.end();) {
            uint64_t key = it->first;
            ++it;
            if (key != kEndKey && key >= begin && key < end) {
              released += Release(key, now, sample);
            }
          }
        } else {
          for (uint64_t seq = begin; seq < end; ++seq) {
            released += Release(seq, now, sample);
          }
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
    auto it = entries_.find(s.key);
    if (it != entries_.end() && it->second.attempts == s.attempts) return;
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
    Entry& e = entries_.at(oldest.key);
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
  return entries_.empty();
}

size_t InflightWindow::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
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
  std::set<uint64_t> lowest;
  for (const auto& [key, entry] : entries_) {
    if (key == kEndKey) continue;
    lowest.insert(key);
    if (lowest.size() > max_listed) lowest.erase(std::prev(lowest.end()));
  }
  std::string text = std::to_string(data_entries_) + " items";
  if (!lowest.empty()) {
    text += " (seq";
    for (uint64_t seq : lowest) text += " " + std::to_string(seq);
    text += data_entries_ > lowest.size() ? " ...)" : ")";
  }
  if (entries_.count(kEndKey)) text += " and the end-of-stream";
  return text;
}

}  // namespace sluice
