// Freeze tests (issue 21, point 1): a process stopped by the scheduler
// (SIGSTOP) for seconds and then resumed. Its peers see a connection that
// answers nothing; when it resumes, its own connections may have been
// dropped while it slept. No such input may abort a process: every process
// exits 0, and the job's outcome is exact, with liveness on (the default)
// and off.
//
// The length of each freeze is the fault itself, so these tests hold a
// process stopped for a set time (StopFor below); everything else waits on
// READY lines and counters.
#include <signal.h>

#include <chrono>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

using std::chrono::seconds;

// Stops `process` for `length`, then lets it go on. Time is what is under
// test here, not a way to synchronise.
void StopFor(Process& process, std::chrono::milliseconds length) {
  process.Signal(SIGSTOP);
  std::this_thread::sleep_for(length);
  process.Signal(SIGCONT);
}

// Liveness (--heartbeat-ms) on, as by default, and off.
class Freeze : public ::testing::TestWithParam<const char*> {
 protected:
  Args Liveness() const { return {"--heartbeat-ms", GetParam()}; }

  // The job of faults_test.cc: a sink that runs until stopped, a hub,
  // 3 token and 2 result workers, every process with --heartbeat-ms.
  void StartJob(int n, Args token_extra = {}, Args result_extra = {}) {
    Args common = Liveness();
    common.insert(common.end(), {"--stats-interval", "0.1"});
    Args sink_args = {"--streams", "0"};
    sink_args.insert(sink_args.end(), common.begin(), common.end());
    job_.StartSink(sink_args);
    job_.hub = Start("sluice-stage", {"--op", "pass", "--in", "@tcp://127.0.0.1:*",
                                      "--out", "@tcp://127.0.0.1:*",
                                      "--heartbeat-ms", GetParam()});
    auto ready = job_.hub->WaitReady();
    job_.hub_in = ready["in"];
    job_.hub_out = ready["out"];
    result_extra.insert(result_extra.end(), common.begin(), common.end());
    token_extra.insert(token_extra.end(), common.begin(), common.end());
    job_.StartResultWorkers(2, result_extra);
    job_.StartProducer(n, 3, common);
    for (int i = 0; i < 3; ++i) job_.token.push_back(job_.StartTokenWorker(token_extra));
  }

  // Every process exits 0 (none by a signal of its own), every item is
  // written once.
  void ExpectExactOutcome(int n) {
    ASSERT_EQ(job_.FinishInOrder(), 0) << job_.sink->err();
    ExpectCompleteExactly(job_.Report(), n, /*no_duplicates=*/false);
    EXPECT_EQ(ReadFile(job_.dir.File("out.txt")), ExpectedResults(n));
  }

  TokenThenResultJob job_;
};

INSTANTIATE_TEST_SUITE_P(Liveness, Freeze, ::testing::Values("1000", "0"),
                         [](const auto& info) {
                           return std::string(info.param) == "0" ? "Off" : "On";
                         });

// The sink stopped for 15 s mid-stream: the workers' sends back up, the
// producer's window fills and it resends; on SIGCONT the sink takes what
// was queued for it, drops the copies, and the job completes.
//
// The ops take no time, so that the sink is the bottleneck when it stops:
// frames pile up in front of it, and on SIGCONT its receive pipe fills at
// once. That is what made libzmq 4.3.4's ZMTP heartbeat abort the sink.
TEST_P(Freeze, SinkStoppedFifteenSecondsThenResumedAbortsNothingAndLosesNothing) {
  constexpr int kItems = 400000;
  StartJob(kItems, {"--latency-ms", "0"}, {"--latency-ms", "0"});
  ASSERT_TRUE(WaitUntilCounterAtLeast(*job_.sink, "items_new", 100000));
  StopFor(*job_.sink, seconds(15));
  ExpectExactOutcome(kItems);
}

// A token worker stopped for 6 s, three times: what it holds is replayed
// through the others, and on each SIGCONT its copies arrive as duplicates.
TEST_P(Freeze, WorkerStoppedSixSecondsThreeTimesAbortsNothingAndLosesNothing) {
  constexpr int kItems = 100000;
  StartJob(kItems);
  uint64_t seen = 5000;
  int freezes = 0;
  for (; freezes < 3; ++freezes) {
    if (!WaitUntilCounterAtLeast(*job_.sink, "items_new", seen)) break;
    StopFor(*job_.token[1], seconds(6));
    seen = job_.sink->LastCounters().value("items_new", uint64_t{0}) + 2000;
  }
  EXPECT_EQ(freezes, 3) << "the job ended before the third freeze";
  ExpectExactOutcome(kItems);
}

// The chaos pattern: over a 200,000-item job, a random worker of either
// stage is stopped for 3 s, then the job runs on for a few thousand items,
// again and again until it ends.
TEST_P(Freeze, AWorkerStoppedThreeSecondsEveryFewSecondsOver200kItemsLosesNothing) {
  constexpr int kItems = 200000;
  // Token 2 ms and result 1 ms at most: the job takes about half a minute.
  StartJob(kItems, {"--latency-ms", "2"}, {"--latency-ms", "1"});
  std::mt19937 random(20261203);
  int freezes = 0;
  uint64_t seen = 10000;
  while (WaitUntilCounterAtLeast(*job_.sink, "items_new", seen, seconds(90))) {
    const bool token_stage = std::uniform_int_distribution<int>(0, 1)(random) == 0;
    auto& workers = token_stage ? job_.token : job_.result;
    auto victim = std::uniform_int_distribution<size_t>(0, workers.size() - 1)(random);
    StopFor(*workers[victim], seconds(3));
    ++freezes;
    seen = job_.sink->LastCounters().value("items_new", uint64_t{0}) + 15000;
    if (seen >= kItems) break;
  }
  EXPECT_GE(freezes, 4) << "the job ended before the faults";
  ExpectExactOutcome(kItems);
}

}  // namespace
}  // namespace sluice::testing
