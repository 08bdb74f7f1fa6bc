// common/counters.h
//
// Counters are first-class: each binary keeps one struct of these, logs it
// periodically and at exit (one JSON line, "counters {...}"), and tests assert
// on it. Relaxed atomics: a counter is a statistic, never a synchronizer.
//
// Thread safety: every method may be called from any thread.
#ifndef SLUICE_COMMON_COUNTERS_H_
#define SLUICE_COMMON_COUNTERS_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/envelope_codec.h"

namespace sluice {

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  void Set(uint64_t v) { value_.store(v, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Frames dropped by a receiver, one counter per RejectReason.
class RejectCounters {
 public:
  void Count(RejectReason reason) {
    by_reason_[static_cast<size_t>(reason)].Add();
  }
  uint64_t value(RejectReason reason) const {
    return by_reason_[static_cast<size_t>(reason)].value();
  }
  uint64_t total() const;
  // Adds "rejected_<reason>" fields to `out`.
  void AppendTo(nlohmann::json& out) const;

 private:
  std::array<Counter, kRejectReasonCount> by_reason_;
};

// Runs `tick` every `interval` on its own thread until destroyed. The wait is
// on a condition variable, so destruction is prompt. interval 0 = never.
class PeriodicTask {
 public:
  PeriodicTask(std::chrono::milliseconds interval, std::function<void()> tick);
  ~PeriodicTask();
  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // Guarded by mu_.
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_COMMON_COUNTERS_H_
