// include/sluice/status.h
//
// Status and StatusOr<T>: how Sluice functions report failure without
// exceptions. Exceptions thrown by cppzmq, Boost or protobuf are caught in the
// one file that calls the library and turned into a Status there.
//
// Each code maps to one process exit code (common/exit_codes.h), so a failure
// deep inside a run reaches main() with the exit code it deserves.
//
// Thread safety: values; copy freely.
#ifndef SLUICE_STATUS_H_
#define SLUICE_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace sluice {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // A flag, file or endpoint the user gave is wrong.
  kUnavailable,      // A peer, address or file could not be reached.
  kIncomplete,       // The work ended before everything arrived.
  kCancelled,        // A stop was requested; not a failure.
  kInternal,         // A bug or an unexpected library failure.
  kDataError,        // The work completed, but some items failed.
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return Status(StatusCode::kInvalidArgument, std::move(m));
}
inline Status Unavailable(std::string m) {
  return Status(StatusCode::kUnavailable, std::move(m));
}
inline Status Internal(std::string m) {
  return Status(StatusCode::kInternal, std::move(m));
}
inline Status Incomplete(std::string m) {
  return Status(StatusCode::kIncomplete, std::move(m));
}
inline Status DataError(std::string m) {
  return Status(StatusCode::kDataError, std::move(m));
}
inline Status Cancelled(std::string m) {
  return Status(StatusCode::kCancelled, std::move(m));
}

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok());
  }
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace sluice

#endif  // SLUICE_STATUS_H_
