// stage/cost_meter.h
//
// CostMeter: the measured cost of an op, in wall-clock nanoseconds per item,
// smoothed, and what the runner decides from it: run the op where its run is
// (cheap), or hand the run to the op's threads. Samples far above the
// estimate are clamped (a preempted thread is not a slow op), unless they
// are huge (an op that blocks is, at once).
//
// The runner feeds it the wall time of each call; tests feed it chosen
// durations, so that its decisions are checked without a clock.
//
// Thread safety: every method may be called from any thread (relaxed
// atomics: an estimate, never a synchronizer).
#ifndef SLUICE_STAGE_COST_METER_H_
#define SLUICE_STAGE_COST_METER_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>

namespace sluice {

class CostMeter {
 public:
  // The op runs on its caller's thread below kCheapNs per item, and goes
  // back to its own threads above kDearNs.
  static constexpr double kCheapNs = 1000;
  static constexpr double kDearNs = 4000;
  static constexpr double kBlockingNs = 100'000;
  static constexpr double kHandOffNs = 10'000;

  // An op with a --latency-ms starts at half of it (it blocks); any other
  // is unmeasured until its first Add().
  explicit CostMeter(std::chrono::milliseconds max_latency) {
    if (max_latency.count() > 0) {
      ns_ = std::chrono::duration<double, std::nano>(max_latency).count() / 2;
    }
  }
  // One call of the op: `items` items in `elapsed`. No-op for 0 items.
  void Add(std::chrono::steady_clock::duration elapsed, size_t items) {
    if (items == 0) return;
    double sample = std::chrono::duration<double, std::nano>(elapsed).count() /
                    static_cast<double>(items);
    double now = ns_.load(std::memory_order_relaxed);
    if (now < 0 || sample >= kBlockingNs) {
      ns_.store(sample, std::memory_order_relaxed);
    } else {
      sample = std::min(sample, 4 * now + 100);
      ns_.store(0.9 * now + 0.1 * sample, std::memory_order_relaxed);
    }
    const double updated = ns_.load(std::memory_order_relaxed);
    if (updated < kCheapNs) cheap_.store(true, std::memory_order_relaxed);
    if (updated > kDearNs) cheap_.store(false, std::memory_order_relaxed);
  }
  bool cheap() const { return cheap_.load(std::memory_order_relaxed); }
  // True if running `items` here costs less than handing them to another
  // thread and back (two wake-ups, kHandOffNs): at low load a run of one
  // item measures a few microseconds, cold, which is not cheap per item
  // but far cheaper than the hand-off. Never for an op that blocks, nor
  // before the op is measured.
  bool CheaperThanHandOff(size_t items) const {
    const double ns = ns_.load(std::memory_order_relaxed);
    return ns >= 0 && ns < kDearNs && ns * static_cast<double>(items) < kHandOffNs;
  }
  // nanoseconds per item; negative until measured.
  double ns_per_item() const { return ns_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> ns_{-1};
  std::atomic<bool> cheap_{false};
};

}  // namespace sluice

#endif  // SLUICE_STAGE_COST_METER_H_
