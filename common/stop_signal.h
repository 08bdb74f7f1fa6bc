// common/stop_signal.h
//
// StopSignal is the one "please stop" flag of a process. SIGINT and SIGTERM
// set it (once InstallSignalHandlers() ran), and so can code (Request()).
// Threads blocked in zmq::poll() include fd() in their poll set: it becomes
// readable on the request and stays readable, so every waiter wakes, now or
// later, without anyone polling in a loop.
//
// Thread safety: all methods may be called from any thread; Request() is
// async-signal-safe.
#ifndef SLUICE_COMMON_STOP_SIGNAL_H_
#define SLUICE_COMMON_STOP_SIGNAL_H_

#include <atomic>

namespace sluice {

class StopSignal {
 public:
  StopSignal();  // Aborts if the kernel refuses an eventfd (out of fds).
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  void Request();
  bool requested() const { return requested_.load(std::memory_order_acquire); }
  // Readable (POLLIN) once Request() has been called. Never read it.
  int fd() const { return fd_; }
  // The signal that requested the stop, or 0.
  int signal_number() const { return signal_.load(); }

  // Routes SIGINT and SIGTERM to this object. At most one StopSignal per
  // process may install handlers; it must outlive the handlers' use.
  void InstallSignalHandlers();

 private:
  friend void HandleStopSignal(int);
  std::atomic<bool> requested_{false};
  std::atomic<int> signal_{0};
  int fd_ = -1;
};

}  // namespace sluice

#endif  // SLUICE_COMMON_STOP_SIGNAL_H_
