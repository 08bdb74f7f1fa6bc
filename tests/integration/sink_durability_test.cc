// Issue 8: the sink's promises under kill -9 and operator mistakes. The sink
// acknowledges an item only once it is committed (output and state handed
// to the operating system), so a sink killed at any instant and started
// again with the same command loses nothing and writes nothing twice.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> ExpectedLines(int n) { return Lines(ExpectedResults(n)); }

// The sink's command with its ephemeral ports made concrete by a first
// start, so that the very same command can be run again after a kill.
struct RestartableSink {
  Args args;
  std::unique_ptr<Process> process;
  std::string in, acks;

  void Start(TokenThenResultJob& job, Args extra) {
    Args first = {"--in", "@tcp://127.0.0.1:*", "--acks", "@tcp://127.0.0.1:*",
                  "--output", job.dir.File("out.txt"), "--report",
                  job.dir.File("report.json"), "--idle-timeout", "120",
                  "--progress", "off", "--stats-interval", "0.1"};
    first.insert(first.end(), extra.begin(), extra.end());
    process = testing::Start("sluice-sink", first);
    auto ready = process->WaitReady();
    in = ready["in"];
    acks = ready["acks"];
    args = first;
    args[1] = "@" + in;
    args[3] = "@" + acks;
    job.sink_in = in;
    job.sink_acks = acks;
  }
  // kill -9, then the same command again.
  void KillAndRestart() {
    process->Signal(SIGKILL);
    ASSERT_EQ(process->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
    process = testing::Start("sluice-sink", args);
    ASSERT_FALSE(process->WaitReady().empty()) << process->err();
  }
};

// Five kills of the sink during a 200,000-item job, each followed by the
// same command: the output holds every result exactly once, the report is
// exact, every process exits 0.
void KillTheSinkFiveTimes(bool ordered) {
  constexpr int kItems = 200000;
  TokenThenResultJob job;
  RestartableSink sink;
  Args extra = {"--max-rate", "40000"};  // ~5 s of work: room for 5 kills.
  if (ordered) extra.push_back("--ordered");
  sink.Start(job, extra);
  job.StartHub();
  job.StartResultWorkers(2, {"--latency-ms", "0"});
  job.StartProducer(kItems, 2, {"--rto-min-ms", "200", "--rto-max-ms", "1000"});
  for (int i = 0; i < 2; ++i) {
    job.token.push_back(job.StartTokenWorker({"--latency-ms", "0"}));
  }
  int kills = 0;
  for (int round = 0; round < 5; ++round) {
    // Mid-stream: this incarnation has taken (and committed) some items.
    if (!WaitUntilCounterAtLeast(*sink.process, "items_new", 5000)) break;
    sink.KillAndRestart();
    ++kills;
  }
  EXPECT_EQ(kills, 5) << "the job ended before the kills";
  job.sink = std::move(sink.process);
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  nlohmann::json report = job.Report();
  ExpectCompleteExactly(report, kItems, /*no_duplicates=*/false);
  std::vector<std::string> lines = Lines(ReadFile(job.dir.File("out.txt")));
  if (!ordered) std::sort(lines.begin(), lines.end());
  std::vector<std::string> expected = ExpectedLines(kItems);
  if (!ordered) std::sort(expected.begin(), expected.end());
  EXPECT_EQ(lines.size(), expected.size());
  EXPECT_TRUE(lines == expected) << "output differs from one line per result";
  if (ordered) {
    EXPECT_EQ(report["output_in_order"], true);
  }
}

TEST(SinkDurability, KillNineOfTheSinkFiveTimesRestartedWithTheSameCommandLosesNothing) {
  KillTheSinkFiveTimes(/*ordered=*/false);
}

TEST(SinkDurability, KillNineOfAnOrderedSinkFiveTimesKeepsOrderAndLosesNothing) {
  KillTheSinkFiveTimes(/*ordered=*/true);
}

// The same sink command started twice by mistake: the second is refused
// (69, naming the lock's holder) before it touches anything, and the first
// finishes the job exactly.
TEST(SinkDurability, SameSinkCommandStartedTwiceIsRefusedAndTouchesNothing) {
  constexpr int kItems = 20000;
  TokenThenResultJob job;
  RestartableSink sink;
  sink.Start(job, {"--max-rate", "20000"});
  job.StartHub();
  job.StartResultWorkers(1, {"--latency-ms", "0"});
  job.StartProducer(kItems, 1);
  job.token.push_back(job.StartTokenWorker({"--latency-ms", "0"}));
  ASSERT_TRUE(WaitUntilCounterAtLeast(*sink.process, "items_new", 2000));
  // The same flags, on other ports (as a copy-paste on another shell would
  // be if the ports were taken) and on the same ports.
  for (bool same_ports : {false, true}) {
    Args args = sink.args;
    if (!same_ports) {
      args[1] = "@tcp://127.0.0.1:*";
      args[3] = "@tcp://127.0.0.1:*";
    }
    std::string err;
    EXPECT_EQ(RunToExit("sluice-sink", args, nullptr, &err), 69) << err;
    EXPECT_NE(err.find("in use by another process (pid " +
                       std::to_string(sink.process->pid()) + ")"),
              std::string::npos)
        << err;
  }
  job.sink = std::move(sink.process);
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  ExpectCompleteExactly(job.Report(), kItems, /*no_duplicates=*/false);
  std::vector<std::string> lines = Lines(ReadFile(job.dir.File("out.txt")));
  std::sort(lines.begin(), lines.end());
  std::vector<std::string> expected = ExpectedLines(kItems);
  std::sort(expected.begin(), expected.end());
  EXPECT_TRUE(lines == expected);
}

// Nothing is cut unless asked: an output with data and no state to resume
// from is refused (64); --fresh starts anew.
TEST(SinkDurability, OutputWithDataAndNoStateIsRefusedUnlessFresh) {
  TempDir dir;
  const std::string output = dir.File("out.txt");
  { std::ofstream(output) << "precious\n"; }
  Args args = {"--in", "@tcp://127.0.0.1:*", "--output", output, "--acks", "off",
               "--idle-timeout", "0.2"};
  std::string err;
  EXPECT_EQ(RunToExit("sluice-sink", args, nullptr, &err), 64) << err;
  EXPECT_NE(err.find("--fresh"), std::string::npos) << err;
  EXPECT_EQ(ReadFile(output), "precious\n");
  args.push_back("--fresh");
  EXPECT_EQ(RunToExit("sluice-sink", args, nullptr, &err), 75) << err;
  EXPECT_EQ(ReadFile(output), "");
}

// A sink whose streams are all complete, started again with the same
// command, has nothing to wait for: it exits 0 at once with the same report,
// and the output is unchanged.
TEST(SinkDurability, RestartAfterACompleteRunExitsZeroWithTheSameReport) {
  TempDir dir;
  Args args = {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
               "--report", dir.File("report.json"), "--acks", "off",
               "--ordered"};
  auto sink = Start("sluice-sink", args);
  std::string in = sink->WaitReady()["in"];
  ASSERT_EQ(RunToExit("sluice-producer", {"--out", ">" + in, "--count", "1000",
                                          "--stream", "s1"}),
            0);
  // Straight into the sink: payloads are the numbers themselves.
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  const std::string output = ReadFile(dir.File("out.txt"));
  ASSERT_EQ(Lines(output).size(), 1000u);
  std::string err;
  EXPECT_EQ(RunToExit("sluice-sink", args, nullptr, &err), 0) << err;
  EXPECT_EQ(ReadFile(dir.File("out.txt")), output);
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["unique"], 1000);
  EXPECT_EQ(report["written"], 1000);
}

// A torn tail: bytes written after the last commit (the output of items
// never acked, half a state record) are cut on restart.
TEST(SinkDurability, TornTailsOfOutputAndStateAreCutOnRestart) {
  TempDir dir;
  Args args = {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
               "--acks", "off", "--streams", "0", "--stats-interval", "0.1"};
  auto sink = Start("sluice-sink", args);
  std::string in = sink->WaitReady()["in"];
  {
    Injector injector(in);
    injector.Send(BatchFrame("s", {0, 1, 2}));
    ASSERT_TRUE(WaitUntilCounterAtLeast(*sink, "items_new", 3));
  }
  sink->Signal(SIGTERM);  // Commits on the way out.
  ASSERT_EQ(sink->Wait(std::chrono::seconds(20)), 75) << sink->err();
  const std::string committed = ReadFile(dir.File("out.txt"));
  ASSERT_EQ(committed, "result_0\nresult_1\nresult_2\n");
  {
    std::ofstream(dir.File("out.txt"), std::ios::app) << "result_3\nresu";
    std::ofstream(dir.File("out.txt.state"), std::ios::app) << std::string("\x40\0\0\0garbage", 11);
  }
  sink = Start("sluice-sink", args);
  in = sink->WaitReady()["in"];
  EXPECT_EQ(ReadFile(dir.File("out.txt")), committed);
  {
    Injector injector(in);
    injector.Send(BatchFrame("s", {2, 3}));
    injector.Send(EndOfStreamFrame("s", 4));
    EXPECT_TRUE(sink->WaitForOutput(
        [](const std::string&, const std::string& err) {
          return err.find("s: complete") != std::string::npos;
        },
        std::chrono::seconds(20)));
  }
  sink->Signal(SIGTERM);
  EXPECT_EQ(sink->Wait(std::chrono::seconds(20)), 0) << sink->err();
  EXPECT_EQ(ReadFile(dir.File("out.txt")),
            "result_0\nresult_1\nresult_2\nresult_3\n");
  EXPECT_NE(sink->err().find("torn tail"), std::string::npos) << sink->err();
}

}  // namespace
}  // namespace sluice::testing
