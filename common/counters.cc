#include "common/counters.h"

#include "common/log.h"
#include "common/thread.h"

#include <string>

namespace sluice {

uint64_t RejectCounters::total() const {
  uint64_t sum = 0;
  for (const Counter& c : by_reason_) sum += c.value();
  return sum;
}

void RejectCounters::AppendTo(nlohmann::json& out) const {
  for (size_t i = 0; i < kRejectReasonCount; ++i) {
    out["rejected_" +
        std::string(RejectReasonName(static_cast<RejectReason>(i)))] =
        by_reason_[i].value();
  }
}

PeriodicTask::PeriodicTask(std::chrono::milliseconds interval,
                           std::function<void()> tick) {
  if (interval.count() <= 0) return;
  auto thread = StartThread("periodic", [this, interval, tick = std::move(tick)] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, interval, [&] { return done_; })) {
      lock.unlock();
      tick();
      lock.lock();
    }
  });
  // Progress and stats lines are a convenience: without a thread for them
  // the process still does its work.
  if (thread.ok()) {
    thread_ = std::move(*thread);
  } else {
    spdlog::warn("{}; no periodic progress or counters lines", thread.status().message());
  }
}

PeriodicTask::~PeriodicTask() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace sluice
