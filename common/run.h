// common/run.h
//
// ItemRun: the unit the data plane moves between threads. A run holds the
// items of one frame (or what a producer emits at once); queues carry runs,
// never single items, so a hand-off between threads costs the same for one
// item as for a hundred.
//
// A run keeps its storage when it is cleared: reused, its item slots keep
// their strings' capacity, so that decoding a frame into a recycled run
// allocates nothing in steady state. RunPool hands recycled runs between the
// threads that empty runs and the threads that fill them.
//
// Thread safety: an ItemRun is a value owned by one thread at a time;
// RunPool may be used from any thread.
#ifndef SLUICE_COMMON_RUN_H_
#define SLUICE_COMMON_RUN_H_

#include <cstddef>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "common/item.h"

namespace sluice {

class ItemRun {
 public:
  ItemRun() = default;
  // A moved-from run is empty (and may be filled again).
  ItemRun(ItemRun&& other) noexcept
      : slots_(std::move(other.slots_)), size_(std::exchange(other.size_, 0)) {
    other.slots_.clear();
  }
  ItemRun& operator=(ItemRun&& other) noexcept {
    slots_ = std::move(other.slots_);
    size_ = std::exchange(other.size_, 0);
    other.slots_.clear();
    return *this;
  }
  ItemRun(const ItemRun&) = delete;
  ItemRun& operator=(const ItemRun&) = delete;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  Item& operator[](size_t i) { return slots_[i]; }
  const Item& operator[](size_t i) const { return slots_[i]; }
  Item* begin() { return slots_.data(); }
  Item* end() { return slots_.data() + size_; }
  const Item* begin() const { return slots_.data(); }
  const Item* end() const { return slots_.data() + size_; }
  std::span<Item> items() { return {slots_.data(), size_}; }
  std::span<const Item> items() const { return {slots_.data(), size_}; }

  // A fresh item at the end (every field at its default); a reused slot
  // keeps the capacity of its strings.
  Item& Append() {
    if (size_ == slots_.size()) {
      slots_.emplace_back();
    } else {
      Reset(slots_[size_]);
    }
    return slots_[size_++];
  }
  // Appends `item` (moved in).
  void Append(Item&& item) {
    if (size_ == slots_.size()) {
      slots_.push_back(std::move(item));
      ++size_;
    } else {
      slots_[size_++] = std::move(item);
    }
  }
  // Keeps the first `n` items.
  void Truncate(size_t n) {
    if (n < size_) size_ = n;
  }
  // Empties the run; its storage stays for reuse.
  void Clear() { size_ = 0; }

 private:
  static void Reset(Item& item) {
    item.stream.clear();
    item.seq = 0;
    item.payload.clear();
    item.produced_at_us = 0;
    item.queued_us = 0;
    item.op_us = 0;
    item.more_payloads.clear();
    item.failure.reset();
    item.count = 0;
    item.dropped = false;
    item.end_of_stream = false;
  }

  std::vector<Item> slots_;
  size_t size_ = 0;
};

// Recycled runs. Get() returns an empty run (a recycled one when there is
// one); Put() takes a run back, keeping at most `max_kept` of them.
class RunPool {
 public:
  explicit RunPool(size_t max_kept = 64) : max_kept_(max_kept) {}

  ItemRun Get() {
    std::lock_guard<std::mutex> lock(mu_);
    if (kept_.empty()) return ItemRun();
    ItemRun run = std::move(kept_.back());
    kept_.pop_back();
    return run;
  }
  void Put(ItemRun run) {
    run.Clear();
    std::lock_guard<std::mutex> lock(mu_);
    if (kept_.size() < max_kept_) kept_.push_back(std::move(run));
  }

 private:
  const size_t max_kept_;
  std::mutex mu_;
  std::vector<ItemRun> kept_;
};

}  // namespace sluice

#endif  // SLUICE_COMMON_RUN_H_
