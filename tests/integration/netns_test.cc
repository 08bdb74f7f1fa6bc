// The job across hosts (issue 3, 5; issue 4, 6d): five hosts as network
// namespaces on one bridge, each with its own address — the producer on one,
// token workers on two more, the hub and the result workers on a fourth,
// the sink on a fifth — connected only through their addresses.
#include <signal.h>

#include <gtest/gtest.h>

#include "tests/integration/netns_lab.h"

namespace sluice::testing {
namespace {

enum Host { kProducerHost, kTokenHostA, kTokenHostB, kHubHost, kSinkHost, kHosts };

// "tcp://0.0.0.0:41234" bound in `host` -> "tcp://<address of host>:41234".
std::string Reach(const NetnsLab& lab, int host, const std::string& bound) {
  return "tcp://" + lab.Address(host) + bound.substr(bound.rfind(':'));
}

struct CrossHostJob {
  NetnsLab lab{kHosts};
  TempDir dir;
  std::unique_ptr<Process> sink, hub, producer;
  std::vector<std::unique_ptr<Process>> token, result;

  void Start(int n) {
    sink = lab.Start(kSinkHost, "sluice-sink",
                     {"--in", "@tcp://0.0.0.0:*", "--acks", "@tcp://0.0.0.0:*",
                      "--streams", "0", "--output", dir.File("out.txt"),
                      "--ordered", "--report", dir.File("report.json"),
                      "--progress", "off"});
    auto sink_ready = sink->WaitReady();
    std::string sink_in = Reach(lab, kSinkHost, sink_ready["in"]);
    std::string sink_acks = Reach(lab, kSinkHost, sink_ready["acks"]);
    hub = lab.Start(kHubHost, "sluice-stage",
                    {"--op", "pass", "--in", "@tcp://0.0.0.0:*", "--out",
                     "@tcp://0.0.0.0:*"});
    auto hub_ready = hub->WaitReady();
    for (int i = 0; i < 2; ++i) {
      result.push_back(lab.Start(
          kHubHost, "sluice-stage",
          {"--op", "result", "--in", Reach(lab, kHubHost, hub_ready["out"]),
           "--out", sink_in}));
      result.back()->WaitReady();
    }
    producer = lab.Start(kProducerHost, "sluice-producer",
                         {"--out", "@tcp://0.0.0.0:*", "--count",
                          std::to_string(n), "--peers", "2", "--acks", sink_acks,
                          "--stats-interval", "0.1"});
    std::string producer_out =
        Reach(lab, kProducerHost, producer->WaitReady()["out"]);
    for (int host : {kTokenHostA, kTokenHostB}) {
      token.push_back(lab.Start(
          host, "sluice-stage",
          {"--op", "token", "--in", producer_out, "--out",
           Reach(lab, kHubHost, hub_ready["in"]), "--stats-interval", "0.1"}));
      token.back()->WaitReady();
    }
  }

  // Producer done (all acknowledged), then stages upstream first, then sink.
  int Finish() {
    EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
    for (auto* wave : {&token, &result}) {
      if (wave == &result) {
        hub->Signal(SIGTERM);
        EXPECT_EQ(hub->Wait(std::chrono::seconds(60)), 0) << hub->err();
      }
      for (auto& p : *wave) p->Signal(SIGTERM);
      for (auto& p : *wave) EXPECT_EQ(p->Wait(std::chrono::seconds(60)), 0) << p->err();
    }
    sink->Signal(SIGTERM);
    return sink->Wait(kJobTimeout).value_or(-1);
  }
};

#define REQUIRE_LAB(job)                                                   \
  if (!(job).lab.ok()) {                                                   \
    GTEST_SKIP() << "SKIPPED: network namespaces unavailable here: "       \
                 << (job).lab.reason();                                    \
  }

TEST(AcrossHosts, JobOverFiveNamespacedHostsCompletesExactly) {
  constexpr int kItems = 3000;
  CrossHostJob job;
  REQUIRE_LAB(job);
  job.Start(kItems);
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  nlohmann::json report = ReadReport(job.dir.File("report.json"));
  ExpectCompleteExactly(report, kItems);
  EXPECT_EQ(ReadFile(job.dir.File("out.txt")), ExpectedResults(kItems));
  for (auto& worker : job.token) {  // Both hosts did work.
    EXPECT_GT(worker->LastCounters()["processed_0_token"].get<int>(), 0);
  }
}

// A token worker host loses its link mid-stream; the items it holds are
// replayed through the other host (the link stays down until the producer
// has resent something), and when the link returns its late copies are
// duplicates the sink drops. The job completes exactly.
TEST(AcrossHosts, WorkerHostLinkCutAndRestoredMidStreamCompletesExactly) {
  constexpr int kItems = 20000;
  CrossHostJob job;
  REQUIRE_LAB(job);
  job.Start(kItems);
  ASSERT_TRUE(WaitUntilBusy(*job.token[0], "processed_0_token"));
  ASSERT_TRUE(job.sink->running());
  job.lab.CutLink(kTokenHostA);
  const bool resent = WaitUntilCounterAtLeast(*job.producer, "retransmits", 1);
  job.lab.RestoreLink(kTokenHostA);
  EXPECT_TRUE(resent) << "the producer did not resend the cut-off host's items: "
                      << job.producer->err();
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  nlohmann::json report = ReadReport(job.dir.File("report.json"));
  ExpectCompleteExactly(report, kItems, /*no_duplicates=*/false);
  EXPECT_EQ(ReadFile(job.dir.File("out.txt")), ExpectedResults(kItems));
}

// Issue 11, point 2: a token worker's host falls silent for good (every
// packet dropped, no reset). The producer replays what it held through the
// other host, and the job completes within the bound of docs/guarantees.md (60
// s after the loss; about 10 s here). Liveness (--heartbeat-ms) drops the
// silent connections after 5 s; the replay itself does not wait for them
// (the producer's window resends on its retransmit timer, and PUSH stops
// feeding a pipe that stopped draining), so this passes with them off too.
TEST(AcrossHosts, WorkerHostFallingSilentIsDroppedAndTheJobCompletes) {
  constexpr int kItems = 20000;
  CrossHostJob job;
  REQUIRE_LAB(job);
  job.Start(kItems);
  ASSERT_TRUE(WaitUntilBusy(*job.token[0], "processed_0_token"));
  ASSERT_TRUE(job.sink->running());
  ASSERT_TRUE(job.lab.DropPackets(kTokenHostA)) << "iptables is needed (make deps installs it)";
  // Liveness drops the silent host's connections after about 5 x
  // --heartbeat-ms (5 s): both ends say so within three times that.
  auto lost = [](const std::string&, const std::string& err) {
    return err.find("peer.lost") != std::string::npos;
  };
  EXPECT_TRUE(job.token[0]->WaitForOutput(lost, std::chrono::seconds(15)))
      << "the silent host's worker kept its connections: " << job.token[0]->err();
  EXPECT_TRUE(job.producer->WaitForOutput(lost, std::chrono::seconds(15)))
      << "the producer kept its connection to the silent host: " << job.producer->err();
  EXPECT_EQ(job.producer->Wait(std::chrono::seconds(60)), 0)
      << "not complete 60 s after a worker host fell silent: " << job.producer->err();
  EXPECT_GT(job.producer->LastCounters()["retransmits"].get<int>(), 0);
  // The silent host's worker cannot drain anywhere: it is killed, as its
  // host would be. The rest stop cleanly.
  job.token[0]->Signal(SIGKILL);
  job.token[0]->Wait(std::chrono::seconds(10));
  job.token.erase(job.token.begin());
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  nlohmann::json report = ReadReport(job.dir.File("report.json"));
  ExpectCompleteExactly(report, kItems, /*no_duplicates=*/false);
  EXPECT_EQ(ReadFile(job.dir.File("out.txt")), ExpectedResults(kItems));
}

}  // namespace
}  // namespace sluice::testing
