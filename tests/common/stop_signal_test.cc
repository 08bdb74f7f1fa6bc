#include "common/stop_signal.h"

#include <poll.h>
#include <signal.h>

#include <gtest/gtest.h>

namespace sluice {
namespace {

bool Readable(int fd) {
  pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

TEST(StopSignal, RequestMakesTheFdReadableForEveryWaiter) {
  StopSignal stop;
  EXPECT_FALSE(stop.requested());
  EXPECT_FALSE(Readable(stop.fd()));
  stop.Request();
  EXPECT_TRUE(stop.requested());
  EXPECT_TRUE(Readable(stop.fd()));
  EXPECT_TRUE(Readable(stop.fd()));  // Stays readable.
}

TEST(StopSignal, SigtermRequestsStopAndRecordsTheSignal) {
  StopSignal stop;
  stop.InstallSignalHandlers();
  raise(SIGTERM);
  EXPECT_TRUE(stop.requested());
  EXPECT_EQ(stop.signal_number(), SIGTERM);
  EXPECT_TRUE(Readable(stop.fd()));
}

}  // namespace
}  // namespace sluice
