#include "common/stop_signal.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace sluice {

namespace {
std::atomic<StopSignal*> g_installed{nullptr};
}  // namespace

void HandleStopSignal(int signal_number) {
  StopSignal* stop = g_installed.load();
  if (stop == nullptr) return;
  int expected = 0;
  stop->signal_.compare_exchange_strong(expected, signal_number);
  stop->Request();
}

StopSignal::StopSignal() {
  fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd_ < 0) {
    std::perror("sluice: eventfd");
    std::abort();
  }
}

StopSignal::~StopSignal() {
  StopSignal* self = this;
  g_installed.compare_exchange_strong(self, nullptr);
  close(fd_);
}

void StopSignal::Request() {
  requested_.store(true, std::memory_order_release);
  uint64_t one = 1;
  // Non-blocking; a full counter still leaves the fd readable.
  [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof(one));
}

void StopSignal::InstallSignalHandlers() {
  g_installed.store(this);
  struct sigaction action = {};
  action.sa_handler = HandleStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  // A peer vanishing must never kill us through a write to a dead pipe.
  signal(SIGPIPE, SIG_IGN);
}

}  // namespace sluice
