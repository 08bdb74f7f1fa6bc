// common/thread.h
//
// StartThread: std::thread's constructor throws std::system_error when the
// system refuses a thread (EAGAIN: a ulimit, a cgroup's pids.max), and a
// throw past a joinable std::thread terminates the process. Every Sluice
// thread starts through StartThread, which turns that into a Status; the
// caller then stops and joins what it had started, and exits with a
// message instead of a core dump.
#ifndef SLUICE_COMMON_THREAD_H_
#define SLUICE_COMMON_THREAD_H_

#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "common/status.h"

namespace sluice {

template <typename F>
StatusOr<std::thread> StartThread(const char* role, F&& fn) {
  try {
    return std::thread(std::forward<F>(fn));
  } catch (const std::system_error& e) {
    return Unavailable(std::string("cannot start the ") + role +
                       " thread: " + e.what());
  }
}

}  // namespace sluice

#endif  // SLUICE_COMMON_THREAD_H_
