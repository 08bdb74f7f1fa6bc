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
    AwaitRoom(lock);
    if (closed_) return false;
    items_.push_back(std::move(item));
    WakeAfterPush(lock);
    return true;
  }

  // Blocks while empty and open. nullopt only once closed and drained.
  std::optional<T> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ++consumers_waiting_;
    not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
    --consumers_waiting_;
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    WakeAfterPop(lock);
    return item;
  }

  // Blocks while empty and open, then moves up to `max_items` queued items
  // (at least one) to the back of `out` without waiting for more: this is how
  // senders batch "what is already there". Returns the number moved; 0 only
  // once closed and drained. REQUIRES: max_items > 0.
  size_t PopUpTo(size_t max_items, std::vector<T>& out) {
    std::unique_lock<std::mutex> lock(mu_);
    ++consumers_waiting_;
    not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
    --consumers_waiting_;
    return TakeUpTo(max_items, out, lock);
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
  // Wakes are targeted: a thread is notified only if one is waiting, and one
  // at a time (notify_one), each woken thread passing the baton on if what
  // it waited for is still there for the next. A broadcast would wake every
  // worker of a pool for a run of items one of them takes whole.
  void AwaitRoom(std::unique_lock<std::mutex>& lock) {
    ++producers_waiting_;
    not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    --producers_waiting_;
  }
  // REQUIRES: lock held; releases it.
  void WakeAfterPush(std::unique_lock<std::mutex>& lock) {
    const bool consumer = consumers_waiting_ > 0;
    const bool producer = producers_waiting_ > 0 && items_.size() < capacity_;
    lock.unlock();
    if (consumer) not_empty_.notify_one();
    if (producer) not_full_.notify_one();
  }
  // REQUIRES: lock held; releases it.
  void WakeAfterPop(std::unique_lock<std::mutex>& lock) {
    const bool producer = producers_waiting_ > 0;
    const bool consumer = consumers_waiting_ > 0 && !items_.empty();
    lock.unlock();
    if (producer) not_full_.notify_one();
    if (consumer) not_empty_.notify_one();
  }
  // REQUIRES: lock held; releases it.
  size_t TakeUpTo(size_t max_items, std::vector<T>& out,
                  std::unique_lock<std::mutex>& lock) {
    size_t n = std::min(max_items, items_.size());
    for (size_t i = 0; i < n; ++i) {
      out.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    if (n > 0) {
      WakeAfterPop(lock);
    } else {
      lock.unlock();
    }
    return n;
  }

  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;            // Guarded by mu_.
  bool closed_ = false;            // Guarded by mu_.
  int consumers_waiting_ = 0;      // Guarded by mu_.
  int producers_waiting_ = 0;      // Guarded by mu_.
  const size_t capacity_;
};

}  // namespace sluice

#endif  // SLUICE_COMMON_BOUNDED_QUEUE_H_
