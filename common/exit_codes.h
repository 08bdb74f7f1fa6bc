// common/exit_codes.h
//
// Process exit codes shared by every Sluice binary , following BSD sysexits.h, and the mapping from a Status to one.
#ifndef SLUICE_COMMON_EXIT_CODES_H_
#define SLUICE_COMMON_EXIT_CODES_H_

#include "common/status.h"

namespace sluice {

inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 64;        // EX_USAGE: bad flag or value.
inline constexpr int kExitDataError = 65;    // EX_DATAERR: items failed.
inline constexpr int kExitUnavailable = 69;  // EX_UNAVAILABLE: peer/address.
inline constexpr int kExitInternal = 70;     // EX_SOFTWARE: a bug.
inline constexpr int kExitIncomplete = 75;   // EX_TEMPFAIL: items missing.

// kOk and kCancelled (a requested stop) map to 0.
inline int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
    case StatusCode::kCancelled:
      return kExitOk;
    case StatusCode::kInvalidArgument:
      return kExitUsage;
    case StatusCode::kUnavailable:
      return kExitUnavailable;
    case StatusCode::kIncomplete:
      return kExitIncomplete;
    case StatusCode::kInternal:
      return kExitInternal;
    case StatusCode::kDataError:
      return kExitDataError;
  }
  return kExitInternal;
}

}  // namespace sluice

#endif  // SLUICE_COMMON_EXIT_CODES_H_
