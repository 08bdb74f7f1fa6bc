// Issue 7, point 5: a producer, a stage and a sink written in Python (the
// examples under examples/python, with pyzmq and the generated sluice_pb2)
// each take part in a job with the C++ binaries.
#include <signal.h>

#include <gtest/gtest.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

std::unique_ptr<Process> StartPython(const std::string& script, Args args) {
  args.insert(args.begin(), {"/usr/bin/python3",
                             std::string(SLUICE_SOURCE_DIR) + "/examples/python/" + script});
  return std::make_unique<Process>(
      std::move(args), std::nullopt,
      std::vector<std::string>{"PYTHONPATH=" + std::string(SLUICE_BUILD_DIR) + "/python"},
      [](const std::string& message) { ADD_FAILURE() << message; });
}

TEST(OtherLanguages, PythonProducerFeedsTheCppStageAndSinkWithAcks) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
                                    "--ordered", "--report", dir.File("report.json"),
                                    "--progress", "off", "--idle-timeout", "60"});
  auto sink_ready = sink->WaitReady();
  auto producer = StartPython("producer.py", {"--out", "tcp://127.0.0.1:*", "--acks",
                                              sink_ready["acks"], "--count", "5000",
                                              "--stream", "from-python"});
  std::string producer_out = producer->WaitReady()["out"];
  auto stage = Start("sluice-stage", {"--op", "token,result", "--latency-ms", "0",
                                      "--in", ">" + producer_out, "--out", ">" + sink_ready["in"]});
  stage->WaitReady();
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  ExpectCompleteExactly(ReadReport(dir.File("report.json")), 5000);
  EXPECT_EQ(ReadFile(dir.File("out.txt")), ExpectedResults(5000));
  stage->Signal(SIGTERM);
  EXPECT_EQ(stage->Wait(std::chrono::seconds(30)), 0);
}

TEST(OtherLanguages, PythonStageWorksBetweenTheCppProducerAndSink) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
                                    "--ordered", "--report", dir.File("report.json"),
                                    "--progress", "off", "--idle-timeout", "60"});
  auto sink_ready = sink->WaitReady();
  // C++ result worker after the Python token stage: a hub in between.
  auto hub = Start("sluice-stage", {"--op", "pass", "--in", "@tcp://127.0.0.1:*",
                                    "--out", "@tcp://127.0.0.1:*"});
  auto hub_ready = hub->WaitReady();
  auto result = Start("sluice-stage", {"--op", "result", "--latency-ms", "0", "--in",
                                       ">" + hub_ready["out"], "--out", ">" + sink_ready["in"]});
  result->WaitReady();
  auto producer = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*", "--count", "3000",
                                            "--peers", "1", "--acks", ">" + sink_ready["acks"]});
  std::string producer_out = producer->WaitReady()["out"];
  auto stage = StartPython("stage.py", {"--in", producer_out, "--out", hub_ready["in"]});
  stage->WaitReady();
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  ExpectCompleteExactly(ReadReport(dir.File("report.json")), 3000);
  EXPECT_EQ(ReadFile(dir.File("out.txt")), ExpectedResults(3000));
  for (Process* p : {stage.get(), hub.get(), result.get()}) {
    p->Signal(SIGTERM);
    EXPECT_EQ(p->Wait(std::chrono::seconds(30)), 0) << p->err();
  }
}

TEST(OtherLanguages, PythonSinkCompletesAStreamAndItsAcksReleaseTheCppProducer) {
  TempDir dir;
  auto sink = StartPython("sink.py", {"--in", "tcp://127.0.0.1:*", "--acks", "tcp://127.0.0.1:*",
                                      "--output", dir.File("out.txt"), "--report",
                                      dir.File("report.json")});
  auto sink_ready = sink->WaitReady();
  auto producer = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*", "--count", "4000",
                                            "--peers", "1", "--acks", ">" + sink_ready["acks"]});
  std::string producer_out = producer->WaitReady()["out"];
  auto stage = Start("sluice-stage", {"--op", "token,result", "--latency-ms", "0", "--in",
                                      ">" + producer_out, "--out", ">" + sink_ready["in"]});
  stage->WaitReady();
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  // The producer exits 0 only once the Python sink's acks said "complete".
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["unique"], 4000);
  EXPECT_EQ(report["expected"], 4000);
  std::string out = ReadFile(dir.File("out.txt"));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 4000);
  EXPECT_NE(out.find("result_3999\n"), std::string::npos);
  stage->Signal(SIGTERM);
  EXPECT_EQ(stage->Wait(std::chrono::seconds(30)), 0);
}

}  // namespace
}  // namespace sluice::testing
