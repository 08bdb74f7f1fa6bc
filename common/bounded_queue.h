// common/bounded_queue.h
//
// BoundedQueue<T> hands items between the threads of one process. A full queue
// blocks Push(), which is how a slow consumer slows its producer down; an empty
// queue blocks Pop(). Nobody polls: waiting is on condition variables.
//
// Stopping: Close() makes every later Push() fail at once and wakes everyone.
// Consumers then drain what is left; once the queue is closed *and* empty,
// Pop() returns nullopt and PopUpTo() returns 0. This replaces "one sentinel
// per consumer": any number of consumers stop after one Close().
//
// Thread safety: every method may be called from any thread. Close() is
// idempotent.
#ifndef SLUICE_COMMON_BOUNDED_QUEUE_H_
#define SLUICE_COMMON_BOUNDED_QUEUE_H_

#include <algorithm>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

namespace sluice {

template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {
    assert(capacity > 0);
  }
  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  // Blocks while full. Returns false if the queue is (or becomes) closed; the
  // item is then dropped, so callers only push what they can afford to lose at
  // shutdown, or check Close() ordering (see the stage's stop path).
  [[nodiscard]] bool Push(T item) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    lock.unlock();
    not_empty_.notify_one();
    return true;
  }

  // Pushes every element of `items` in order, blocking whenever the queue is
  // full, and taking the lock once per run of free slots rather than once per
  // item. Returns the number pushed: items.size() unless the queue closed.
  size_t PushAll(std::vector<T>& items) {
    size_t pushed = 0;
    while (pushed < items.size()) {
      std::unique_lock<std::mutex> lock(mu_);
      not_full_.wait(lock,
                     [&] { return closed_ || items_.size() < capacity_; });
      if (closed_) return pushed;
      size_t room = capacity_ - items_.size();
      size_t n = std::min(room, items.size() - pushed);
      for (size_t i = 0; i < n; ++i) {
        items_.push_back(std::move(items[pushed + i]));
      }
      pushed += n;
      lock.unlock();
      if (n == 1) {
        not_empty_.notify_one();
      } else {
        not_empty_.notify_all();
      }
    }
    return pushed;
  }

  // Blocks while empty and open. nullopt only once closed and drained.
  std::optional<T> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    lock.unlock();
    not_full_.notify_one();
    return item;
  }

  // Blocks while empty and open, then moves up to `max_items` queued items
  // (at least one) to the back of `out` without waiting for more: this is how
  // senders batch "what is already there". Returns the number moved; 0 only
  // once closed and drained. REQUIRES: max_items > 0.
  size_t PopUpTo(size_t max_items, std::vector<T>& out) {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
    size_t n = std::min(max_items, items_.size());
    for (size_t i = 0; i < n; ++i) {
      out.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    lock.unlock();
    if (n == 1) {
      not_full_.notify_one();
    } else if (n > 1) {
      not_full_.notify_all();
    }
    return n;
  }

  // Like PopUpTo(), but gives up at `deadline`: nullopt then (the queue was
  // empty and open all along); 0 once closed and drained.
  template <typename Clock, typename Duration>
  std::optional<size_t> PopUpToUntil(
      size_t max_items, std::vector<T>& out,
      std::chrono::time_point<Clock, Duration> deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!not_empty_.wait_until(lock, deadline,
                               [&] { return closed_ || !items_.empty(); })) {
      return std::nullopt;
    }
    size_t n = std::min(max_items, items_.size());
    for (size_t i = 0; i < n; ++i) {
      out.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    lock.unlock();
    if (n > 0) not_full_.notify_all();
    return n;
  }

  // Wakes all waiters; later pushes fail, pops drain then report closed.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }
  size_t capacity() const { return capacity_; }
  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;  // Guarded by mu_.
  bool closed_ = false;  // Guarded by mu_.
  const size_t capacity_;
};

}  // namespace sluice

#endif  // SLUICE_COMMON_BOUNDED_QUEUE_H_
