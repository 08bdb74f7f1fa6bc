// Issue 8, point 9: stop paths and operator mistakes. Each test names the
// behaviour it holds the binaries to; "promptly" means within a bound far
// below what the old behaviour took (a hang, or tens of seconds).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

constexpr auto kPromptly = std::chrono::seconds(10);

TEST(StopPaths, SigtermWhileWaitingForPeersExitsZeroPromptly) {
  auto producer = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*",
                                            "--acks", "off", "--peers", "2"});
  producer->WaitReady();
  producer->Signal(SIGTERM);
  EXPECT_EQ(producer->Wait(kPromptly), 0) << producer->err();
}

// A downstream that takes frames and never passes them on: the producer
// fills its window and waits for acks. SIGINT then ends it within its stop
// grace, with 75 and the way to resume.
TEST(StopPaths, SigintWhileWaitingForAcksExitsPromptlyWith75AndSaysHowToResume) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*"});
  auto sink_ready = sink->WaitReady();
  auto producer = Start("sluice-producer",
                        {"--out", "@tcp://127.0.0.1:*", "--acks",
                         ">" + sink_ready["acks"], "--count", "100000",
                         "--window", "1000", "--stream", "held",
                         "--stats-interval", "0.1"});
  std::string out = producer->WaitReady()["out"];
  zmq::context_t context(1);
  zmq::socket_t black_hole(context, zmq::socket_type::pull);
  black_hole.set(zmq::sockopt::linger, 0);
  black_hole.connect(out);
  ASSERT_TRUE(WaitUntilCounterAtLeast(*producer, "tx_items", 1000));
  producer->Signal(SIGINT);
  EXPECT_EQ(producer->Wait(kPromptly), 75) << producer->err();
  EXPECT_NE(producer->err().find("same --stream held"), std::string::npos)
      << producer->err();
}

// Issue 21, point 5: a stage whose sink has finished the stream and exited
// holds a late duplicate that nobody will take. With --acks it heard the
// sink report the stream complete, drops the duplicate (late_dropped), and
// SIGTERM ends it at once with 0; without, it waits out --drain-timeout
// and exits 69, as before.
TEST(StopPaths, AStageThatHeardItsStreamCompleteDropsALateDuplicateAndStopsAtOnce) {
  for (bool acks : {true, false}) {
    SCOPED_TRACE(acks ? "stage with --acks" : "stage without --acks");
    TempDir dir;
    auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                      dir.File("out.txt"), "--progress", "off"});
    auto sink_ready = sink->WaitReady();
    Args stage_args = {"--in", "@tcp://127.0.0.1:*", "--out", ">" + sink_ready["in"],
                       "--drain-timeout", "3", "--stats-interval", "0.05"};
    if (acks) stage_args.insert(stage_args.end(), {"--acks", ">" + sink_ready["acks"]});
    auto stage = Start("sluice-stage", stage_args);
    const std::string stage_in = stage->WaitReady()["in"];
    auto producer = Start("sluice-producer",
                          {"--out", ">" + stage_in, "--acks", ">" + sink_ready["acks"],
                           "--count", "2000", "--stream", "late"});
    ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
    ASSERT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
    Injector late(stage_in);
    late.Send(BatchFrame("late", {5}, "again_"));
    ASSERT_TRUE(WaitUntilCounterAtLeast(*stage, "rx_items", 2001)) << stage->err();
    if (acks) {
      ASSERT_TRUE(WaitUntilCounterAtLeast(*stage, "late_dropped", 1)) << stage->err();
    }
    stage->Signal(SIGTERM);
    EXPECT_EQ(stage->Wait(kPromptly), acks ? 0 : 69) << stage->err();
    EXPECT_EQ(ReadFile(dir.File("out.txt")).find("again_"), std::string::npos);
  }
}

TEST(StopPaths, GiveUpFiresWhenNothingIsConnectedDownstream) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*"});
  auto sink_ready = sink->WaitReady();
  auto producer = Start("sluice-producer",
                        {"--out", "@tcp://127.0.0.1:*", "--acks",
                         ">" + sink_ready["acks"], "--count", "1000",
                         "--give-up", "1"});
  producer->WaitReady();
  EXPECT_EQ(producer->Wait(kPromptly), 75) << producer->err();
  EXPECT_NE(producer->err().find("no peer downstream took a frame"),
            std::string::npos)
      << producer->err();
}

TEST(StopPaths, UnwritableReportFailsBeforeReadyWithExit64) {
  std::string out, err;
  EXPECT_EQ(RunToExit("sluice-sink",
                      {"--in", "@tcp://127.0.0.1:*", "--report",
                       "/nonexistent-folder/report.json"},
                      &out, &err),
            64);
  EXPECT_EQ(out.find("READY"), std::string::npos) << out;
  EXPECT_NE(err.find("--report"), std::string::npos) << err;
}

TEST(StopPaths, MissingInputFileFailsBeforeReadyWithExit64) {
  std::string out, err;
  EXPECT_EQ(RunToExit("sluice-producer",
                      {"--out", "@tcp://127.0.0.1:*", "--stream", "s",
                       "--input", "/nonexistent-folder/input.txt"},
                      &out, &err),
            64);
  EXPECT_EQ(out.find("READY"), std::string::npos) << out;
  EXPECT_NE(err.find("/nonexistent-folder/input.txt"), std::string::npos) << err;
}

TEST(StopPaths, IpcPathTooLongExits64NamingTheLimit) {
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer",
                      {"--out", "@ipc:///tmp/" + std::string(200, 'p')}, nullptr,
                      &err),
            64);
  EXPECT_NE(err.find("at most 107"), std::string::npos) << err;
}

TEST(StopPaths, ConfigThatIsAFolderExits64) {
  TempDir dir;
  std::string err;
  EXPECT_EQ(RunToExit("sluice-sink", {"--config", dir.path()}, nullptr, &err), 64);
  EXPECT_NE(err.find("is a folder"), std::string::npos) << err;
}

// Issue 8: threads are owned. A stage that the system refuses threads (a
// cgroup's pids.max, as a container runtime sets) stops what it started and
// exits 69 with a message, instead of std::terminate and a core dump.
TEST(StopPaths, ThreadsTheSystemRefusesEndInAMessageAndExit69NotACrash) {
  const std::string cgroup =
      "/sys/fs/cgroup/pids/sluice-test-" + std::to_string(getpid());
  if (mkdir(cgroup.c_str(), 0755) != 0) {
    GTEST_SKIP() << "cannot make a pids cgroup at " << cgroup << " (needs root "
                 << "and cgroup v1's pids controller)";
  }
  { std::ofstream(cgroup + "/pids.max") << 8; }
  // The shell joins the cgroup, then becomes the stage: every thread it
  // starts counts against pids.max.
  auto stage = std::make_unique<Process>(
      std::vector<std::string>{
          "/bin/sh", "-c",
          "echo $$ > " + cgroup + "/cgroup.procs && exec " +
              BinaryPath("sluice-stage") +
              " --op pass --threads 64 --in @tcp://127.0.0.1:* --out @tcp://127.0.0.1:*"},
      std::nullopt, std::vector<std::string>{},
      [](const std::string& message) { ADD_FAILURE() << message; });
  auto code = stage->Wait(std::chrono::seconds(30));
  rmdir(cgroup.c_str());
  EXPECT_EQ(code, 69) << stage->err();
  EXPECT_NE(stage->err().find("cannot start the"), std::string::npos) << stage->err();
  EXPECT_EQ(stage->err().find("terminate called"), std::string::npos) << stage->err();
}

}  // namespace
}  // namespace sluice::testing
