// common/clock.h
//
// Wall-clock time for timestamps that cross processes (produced_at_us).
// Durations inside a process use std::chrono::steady_clock directly.
#ifndef SLUICE_COMMON_CLOCK_H_
#define SLUICE_COMMON_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace sluice {

// Microseconds since the Unix epoch, system clock.
inline int64_t WallMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace sluice

#endif  // SLUICE_COMMON_CLOCK_H_
