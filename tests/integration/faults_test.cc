// Fault tests (issue 4): the token-then-result job with several workers per
// stage while workers are killed, frozen or starved. Every test checks the
// sink's report: complete, unique = N, missing 0, every item written once.
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <random>

#include <gtest/gtest.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

// The sink runs until stopped (--streams 0), so that stages can drain into
// it at the end (FinishInOrder).
void StartJob(TokenThenResultJob& job, int n, int token_workers,
              int result_workers, Args token_extra = {},
              Args result_extra = {}) {
  job.StartSink({"--streams", "0"});
  job.StartHub();
  Args busy = {"--stats-interval", "0.1"};
  result_extra.insert(result_extra.end(), busy.begin(), busy.end());
  token_extra.insert(token_extra.end(), busy.begin(), busy.end());
  job.StartResultWorkers(result_workers, result_extra);
  job.StartProducer(n, token_workers, busy);
  for (int i = 0; i < token_workers; ++i) {
    job.token.push_back(job.StartTokenWorker(token_extra));
  }
}

void ExpectExactOutcome(TokenThenResultJob& job, int n) {
  ASSERT_EQ(job.FinishInOrder(), 0) << job.sink->err();
  nlohmann::json report = job.Report();
  ExpectCompleteExactly(report, n, /*no_duplicates=*/false);
  EXPECT_EQ(ReadFile(job.dir.File("out.txt")), ExpectedResults(n));
}

uint64_t Retransmits(Process& producer) {
  return producer.LastCounters().value("retransmits", uint64_t{0});
}

// Issue 4, 6a: kill -9 of a token worker mid-stream, a replacement started.
TEST(Faults, KillNineOfATokenWorkerMidStreamWithAReplacementLosesNothing) {
  constexpr int kItems = 15000;
  TokenThenResultJob job;
  StartJob(job, kItems, 3, 2);
  ASSERT_TRUE(WaitUntilBusy(*job.token[0], "processed_0_token"));
  ASSERT_TRUE(job.sink->running());
  job.token[0]->Signal(SIGKILL);
  EXPECT_EQ(job.token[0]->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
  job.token.push_back(job.StartTokenWorker({"--stats-interval", "0.1"}));
  ASSERT_TRUE(WaitUntilBusy(*job.token.back(), "processed_0_token"));
  job.token.erase(job.token.begin());  // Reaped; FinishInOrder skips it.
  ExpectExactOutcome(job, kItems);
  // The killed worker held items in its queues: they were replayed.
  EXPECT_GT(Retransmits(*job.producer), 0u);
}

// A worker killed while it holds the only line of a quiet input (a pipe
// that stays open): the producer, waiting on its input, still resends the
// line when it times out, and the replacement worker delivers it before any
// more input comes.
TEST(Faults, ALineHeldByAKilledWorkerIsResentWhileTheInputIsQuiet) {
  TempDir dir;
  const std::string fifo = dir.File("input");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                    dir.File("out.txt"), "--progress", "off",
                                    "--stats-interval", "0.05"});
  auto ready = sink->WaitReady();
  auto producer = Start("sluice-producer",
                        {"--out", "@tcp://127.0.0.1:*", "--input", fifo, "--acks",
                         ">" + ready["acks"], "--rto-min-ms", "200", "--rto-max-ms",
                         "1000", "--stats-interval", "0.05"});
  // Opening a FIFO waits for the other end: the producer opens it first thing.
  std::FILE* input = std::fopen(fifo.c_str(), "we");  // Close-on-exec.
  ASSERT_NE(input, nullptr);
  const std::string producer_out = producer->WaitReady()["out"];
  // Holds what it gets for an hour.
  auto holder = Start("sluice-stage", {"--op", "token", "--latency-ms", "3600000",
                                       "--in", ">" + producer_out, "--out",
                                       ">" + ready["in"], "--stats-interval", "0.05"});
  std::fputs("one\n", input);
  std::fflush(input);
  ASSERT_TRUE(WaitUntilCounterAtLeast(*holder, "rx_items", 1, std::chrono::seconds(20)))
      << holder->err();
  holder->Signal(SIGKILL);
  EXPECT_EQ(holder->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
  auto replacement = Start("sluice-stage", {"--op", "pass", "--in", ">" + producer_out,
                                            "--out", ">" + ready["in"]});
  EXPECT_TRUE(WaitUntilCounterAtLeast(*sink, "items_new", 1, std::chrono::seconds(20)))
      << sink->LastCounters().dump() << producer->err();
  EXPECT_TRUE(WaitUntilCounterAtLeast(*producer, "retransmits", 1, std::chrono::seconds(5)))
      << producer->err();
  std::fclose(input);
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  replacement->Signal(SIGTERM);
  EXPECT_EQ(replacement->Wait(std::chrono::seconds(30)), 0) << replacement->err();
  EXPECT_EQ(ReadFile(dir.File("out.txt")), "one\n");
}

// Issue 4, 6b: repeated kill -9 of random workers of both stages.
TEST(Faults, RepeatedKillNineOfRandomWorkersOfBothStagesLosesNothing) {
  constexpr int kItems = 30000;
  TokenThenResultJob job;
  StartJob(job, kItems, 3, 3);
  std::mt19937 random(20261122);
  int kills = 0;
  for (int round = 0; round < 6 && job.sink->running(); ++round) {
    bool token_stage = round % 2 == 0;
    auto& workers = token_stage ? job.token : job.result;
    const std::string counter = token_stage ? "processed_0_token" : "processed_0_result";
    size_t victim = std::uniform_int_distribution<size_t>(0, workers.size() - 1)(random);
    if (!WaitUntilBusy(*workers[victim], counter)) break;  // The job ended.
    workers[victim]->Signal(SIGKILL);
    workers[victim]->Wait(std::chrono::seconds(10));
    ++kills;
    if (token_stage) {
      workers[victim] = job.StartTokenWorker({"--stats-interval", "0.1"});
    } else {
      workers[victim] = Start("sluice-stage",
                              {"--op", "result", "--in", ">" + job.hub_out,
                               "--out", ">" + job.sink_in, "--stats-interval", "0.1"});
      workers[victim]->WaitReady();
    }
  }
  EXPECT_GE(kills, 4) << "the job ended before the faults";
  ExpectExactOutcome(job, kItems);
}

// Issue 4, 6c: SIGSTOP of a worker, then SIGCONT. Its items are replayed
// through the others (it stays frozen until the producer has resent
// something); when it resumes, its copies reach the sink as duplicates and
// are not written again.
TEST(Faults, SigstopOfAWorkerForSecondsThenSigcontLosesNothingAndWritesOnce) {
  constexpr int kItems = 20000;
  TokenThenResultJob job;
  StartJob(job, kItems, 3, 2);
  ASSERT_TRUE(WaitUntilBusy(*job.token[1], "processed_0_token"));
  job.token[1]->Signal(SIGSTOP);
  const bool resent = WaitUntilCounterAtLeast(*job.producer, "retransmits", 1);
  job.token[1]->Signal(SIGCONT);
  EXPECT_TRUE(resent) << "nothing was resent while a worker was frozen";
  ExpectExactOutcome(job, kItems);
  EXPECT_GT(Retransmits(*job.producer), 0u);
}

// Issue 4, 6e: a sink 100 times slower than the producer. Memory of every
// process stays under a fixed bound while it runs (sampled), and nothing is
// lost. The bound is the one stated in docs/guarantees.md.
TEST(Faults, SinkHundredTimesSlowerKeepsEveryProcessUnderTheMemoryBound) {
  constexpr int kItems = 8000;
  constexpr long kBoundKib = 32 * 1024;  // 32 MiB per process.
  TokenThenResultJob job;
  // Zero-latency stages: the producer could go at ~500,000 items/s; the sink
  // takes 5,000/s.
  job.StartSink({"--streams", "0", "--max-rate", "5000"});
  job.StartHub();
  job.StartResultWorkers(2, {"--latency-ms", "0"});
  job.StartProducer(kItems, 2);
  for (int i = 0; i < 2; ++i) {
    job.token.push_back(job.StartTokenWorker({"--latency-ms", "0"}));
  }
  // Each process with its role, to say which one peaked.
  std::vector<std::pair<Process*, std::string>> all = {
      {job.sink.get(), "sink"}, {job.hub.get(), "hub"}, {job.producer.get(), "producer"}};
  for (size_t i = 0; i < job.token.size(); ++i) {
    all.emplace_back(job.token[i].get(), "token worker " + std::to_string(i));
  }
  for (size_t i = 0; i < job.result.size(); ++i) {
    all.emplace_back(job.result[i].get(), "result worker " + std::to_string(i));
  }
  long peak = 0;
  std::string peak_of;
  int samples = 0;
  // Sample every 50 ms until the producer has every ack (the sampling
  // period is the wait, not a synchronisation).
  while (!job.producer->Wait(std::chrono::milliseconds(50))) {
    for (const auto& [p, role] : all) {
      long rss = p->RssKib();
      if (rss > peak) {
        peak = rss;
        peak_of = role;
      }
    }
    ++samples;
  }
  EXPECT_GT(samples, 20);  // ~1.6 s: the sink was the bottleneck.
  EXPECT_LT(peak, kBoundKib) << "peak RSS " << peak << " KiB (" << peak_of << ")";
  std::printf("peak resident memory of any process: %ld KiB (%s), %d samples\n",
              peak, peak_of.c_str(), samples);
  ExpectExactOutcome(job, kItems);
  // A slow but healthy pipeline sets off no storm of resends (a stray one
  // may come from two worker paths drifting apart on a loaded machine).
  EXPECT_LE(Retransmits(*job.producer), uint64_t{kItems / 100})
      << "a slow sink set off a storm of resends";
}

}  // namespace
}  // namespace sluice::testing
