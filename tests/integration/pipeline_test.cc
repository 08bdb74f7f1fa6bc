// End-to-end tests of the pipeline: the real binaries as separate processes
// on 127.0.0.1, ephemeral ports, each started after the READY line of what it
// connects to. Each test names the docs/design.md guarantee or issue point it
// checks.
#include <signal.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

// Issue 2, 9a: N = 1000, 3 token workers, a hub, 2 result workers.
TEST(Pipeline, TokenThenResultJobCompletesWithThreeTokenWorkersAHubAndTwoResultWorkers) {
  TokenThenResultJob job;
  job.StartAll(1000, 3, 2);
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  nlohmann::json report = job.Report();
  ExpectCompleteExactly(report, 1000);
  EXPECT_EQ(report["output_in_order"], true);
  EXPECT_EQ(ReadFile(job.dir.File("out.txt")), ExpectedResults(1000));
  for (const char* field : {"elapsed_s", "items_per_s"}) {
    EXPECT_GT(report[field].get<double>(), 0) << field;
  }
  EXPECT_GT(report["latency_ms"]["p99"].get<double>(), 0);
  ASSERT_EQ(report["streams"].size(), 1u);
  EXPECT_EQ(report["streams"][0]["unique"], 1000);
  EXPECT_NE(job.sink->out().find("COMPLETE: 1000 of 1000"), std::string::npos)
      << job.sink->out();
  // Every token worker took part: --peers stopped the first from taking all.
  for (auto& worker : job.token) {
    EXPECT_GT(worker->LastCounters()["processed_0_token"].get<uint64_t>(), 0u);
  }
}

// An even start: workers that connect all at once, while the producer
// waits for them (--peers), each get work from the first frame on. One
// item per frame, as many items as workers: each worker gets exactly one.
TEST(Pipeline, EveryWorkerTheProducerWaitsForGetsOneOfTheFirstFrames) {
  constexpr int kWorkers = 6;
  for (int round = 0; round < 3; ++round) {
    TempDir dir;
    auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--report",
                                      dir.File("report.json"), "--progress", "off"});
    auto sink_ready = sink->WaitReady();
    auto producer = Start("sluice-producer",
                          {"--out", "@tcp://127.0.0.1:*", "--count", std::to_string(kWorkers),
                           "--batch-items", "1", "--peers", std::to_string(kWorkers),
                           "--acks", ">" + sink_ready["acks"]});
    std::string producer_out = producer->WaitReady()["out"];
    // Started together, not one READY after the other.
    std::vector<std::unique_ptr<Process>> workers;
    for (int i = 0; i < kWorkers; ++i) {
      workers.push_back(Start("sluice-stage", {"--op", "pass", "--in", producer_out,
                                               "--out", sink_ready["in"]}));
    }
    for (auto& w : workers) w->WaitReady();
    ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
    ASSERT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
    for (auto& w : workers) w->Signal(SIGTERM);
    for (int i = 0; i < kWorkers; ++i) {
      EXPECT_EQ(workers[i]->Wait(std::chrono::seconds(30)), 0);
      EXPECT_EQ(workers[i]->LastCounters()["processed_0_pass"], 1)
          << "worker " << i << " of round " << round << ": "
          << workers[i]->LastCounters().dump();
    }
    ExpectCompleteExactly(ReadReport(dir.File("report.json")), kWorkers);
  }
}

// docs/design.md, fused stages: one stage process runs the whole chain.
TEST(Pipeline, FusedTokenResultStagesRunTheWholeJob) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                    dir.File("out.txt"), "--ordered", "--report",
                                    dir.File("report.json"), "--progress", "off"});
  auto sink_ready = sink->WaitReady();
  std::string sink_in = sink_ready["in"];
  auto producer = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*",
                                            "--count", "500", "--peers", "2",
                                            "--acks", ">" + sink_ready["acks"]});
  std::string producer_out = producer->WaitReady()["out"];
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(Start("sluice-stage", {"--op", "token,result", "--threads",
                                             "10,5", "--in", producer_out,
                                             "--out", sink_in}));
    workers.back()->WaitReady();
  }
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  ASSERT_EQ(producer->Wait(kJobTimeout), 0);
  for (auto& w : workers) w->Signal(SIGTERM);
  for (auto& w : workers) EXPECT_EQ(w->Wait(std::chrono::seconds(30)), 0);
  ExpectCompleteExactly(ReadReport(dir.File("report.json")), 500);
  EXPECT_EQ(ReadFile(dir.File("out.txt")), ExpectedResults(500));
}

// docs/design.md wire rules, issue 2 9b: the end-of-stream may overtake items that
// travel through another worker; the sink still completes the stream.
TEST(Pipeline, EndOfStreamOvertakingItemsThroughAnotherWorkerStillCompletes) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                    dir.File("out.txt"), "--ordered", "--report",
                                    dir.File("report.json"), "--progress", "off",
                                    "--acks", "off"});
  std::string sink_in = sink->WaitReady()["in"];
  // Two paths into the sink: a slow worker for the items, a fast one for the
  // end-of-stream.
  Injector slow_path, fast_path;
  auto slow = Start("sluice-stage", {"--op", "pass", "--threads", "1",
                                     "--latency-ms", "100", "--in",
                                     ">" + slow_path.address(), "--out", sink_in});
  slow->WaitReady();
  auto fast = Start("sluice-stage", {"--op", "pass", "--in",
                                     ">" + fast_path.address(), "--out", sink_in});
  fast->WaitReady();
  slow_path.Send(BatchFrame("overtaken", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  fast_path.Send(EndOfStreamFrame("overtaken", 10));
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  ExpectCompleteExactly(report, 10);
  // The end-of-stream really did arrive first.
  EXPECT_GT(report["streams"][0]["after_end_of_stream"].get<int>(), 0) << report.dump(2);
  // Regression (issue 7): when a data item completes the stream, the sink
  // once named it from the item it had just moved into its writer.
  EXPECT_NE(sink->err().find("stream overtaken: complete"), std::string::npos) << sink->err();
  EXPECT_EQ(ReadFile(dir.File("out.txt")), ExpectedResults(10));
  slow->Signal(SIGTERM);
  fast->Signal(SIGTERM);
  EXPECT_EQ(slow->Wait(std::chrono::seconds(30)), 0);
  EXPECT_EQ(fast->Wait(std::chrono::seconds(30)), 0);
}

// docs/design.md wire rules, issue 2 8 and 9c: garbage, oversized and
// wrong-version frames sent to a running stage and sink are counted by
// reason and dropped; the processes keep serving; the job completes exactly.
TEST(Pipeline, BadFramesInjectedIntoARunningStageAndSinkAreCountedAndTheJobCompletes) {
  TokenThenResultJob job;
  job.StartSink({"--max-frame-bytes", "65536"});
  Injector into_sink(job.sink_in);
  job.StartProducer(3000, 2);
  Injector into_stage;  // The token workers connect to it as a second input.
  for (int i = 0; i < 2; ++i) {
    job.token.push_back(Start(
        "sluice-stage", {"--op", "token,result", "--threads", "8,4",
                         "--latency-ms", "2,1", "--max-frame-bytes", "65536",
                         "--in", ">" + job.producer_out + ",>" + into_stage.address(),
                         "--out", job.sink_in}));
    job.token.back()->WaitReady();
  }
  const std::vector<std::string> bad = {
      std::string("\x0a\xff\xff\xff\xff garbage", 13),  // parse_error
      BatchFrame("s", {1, 2, 3}).substr(0, 9),          // truncated
      VersionedFrame(4),                                // bad_version
      std::string(80000, '\x01'),                       // too_large
  };
  for (int round = 0; round < 2; ++round) {  // One round per token worker.
    for (const std::string& frame : bad) {
      into_stage.Send(frame);
      into_sink.Send(frame);
    }
  }
  // Far over twice the limit: libzmq drops the sender's connection.
  into_sink.Send(std::string(200000, '\x02'));
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  nlohmann::json report = job.Report();
  ExpectCompleteExactly(report, 3000);
  EXPECT_EQ(report["rejected"]["rejected_parse_error"], 4);
  EXPECT_EQ(report["rejected"]["rejected_bad_version"], 2);
  EXPECT_EQ(report["rejected"]["rejected_too_large"], 2);
  uint64_t stage_parse = 0, stage_version = 0, stage_large = 0;
  std::string stage_logs;
  for (auto& worker : job.token) {
    stage_logs += worker->err();
    nlohmann::json c = worker->LastCounters();
    stage_parse += c["rejected_parse_error"].get<uint64_t>();
    stage_version += c["rejected_bad_version"].get<uint64_t>();
    stage_large += c["rejected_too_large"].get<uint64_t>();
  }
  EXPECT_NE(stage_logs.find("rx.reject"), std::string::npos);
  EXPECT_EQ(stage_parse, 4u);
  EXPECT_EQ(stage_version, 2u);
  EXPECT_EQ(stage_large, 2u);
  EXPECT_NE(job.sink->err().find("rx.reject"), std::string::npos);
}

// docs/design.md "Stopping", issue 2 9d: SIGTERM to one of several workers of
// each stage mid-stream. Each stops reading, sends what it holds and exits 0;
// what was still on its way to it is replayed (acks), so the job completes
// with nothing lost and nothing written twice.
TEST(Pipeline, SigtermToOneOfSeveralStageWorkersMidStreamLosesNothing) {
  constexpr int kItems = 12000;
  TokenThenResultJob job;
  job.StartSink({"--streams", "0"});
  job.StartHub();
  job.StartResultWorkers(2, {"--stats-interval", "0.1"});
  job.StartProducer(kItems, 3);
  for (int i = 0; i < 3; ++i) {
    job.token.push_back(job.StartTokenWorker({"--stats-interval", "0.1"}));
  }
  ASSERT_TRUE(WaitUntilBusy(*job.token[0], "processed_0_token"));
  ASSERT_TRUE(WaitUntilBusy(*job.result[0], "processed_0_result"));
  ASSERT_TRUE(job.sink->running()) << "the job ended before the signal";
  job.token[0]->Signal(SIGTERM);
  job.result[0]->Signal(SIGTERM);
  EXPECT_EQ(job.token[0]->Wait(std::chrono::seconds(60)), 0) << job.token[0]->err();
  EXPECT_EQ(job.result[0]->Wait(std::chrono::seconds(60)), 0) << job.result[0]->err();
  ASSERT_EQ(job.FinishInOrder(), 0) << job.sink->err();
  nlohmann::json report = job.Report();
  ExpectCompleteExactly(report, kItems, /*no_duplicates=*/false);
  EXPECT_EQ(ReadFile(job.dir.File("out.txt")), ExpectedResults(kItems));
  // Each stopped worker sent on everything it had taken.
  for (Process* stopped : {job.token[0].get(), job.result[0].get()}) {
    nlohmann::json c = stopped->LastCounters();
    EXPECT_EQ(c["rx_items"], c["tx_items"]) << c.dump();
    EXPECT_GT(c["tx_items"].get<int>(), 0) << c.dump();
  }
}

// docs/design.md completion rule, issue 2 9e: an item that never arrives makes the
// sink give up after --idle-timeout with exit 75, and the report says how
// many (and which) are missing.
TEST(Pipeline, ItemThatNeverArrivesMakesTheSinkExit75WithTheMissingCount) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--report",
                                    dir.File("report.json"), "--idle-timeout",
                                    "1", "--progress", "off"});
  std::string sink_in = sink->WaitReady()["in"];
  Injector producer(sink_in);
  producer.Send(BatchFrame("gappy", {0, 1, 2, 3, 4, 6, 7, 8, 9}));
  producer.Send(EndOfStreamFrame("gappy", 10));
  ASSERT_EQ(sink->Wait(std::chrono::seconds(30)), 75) << sink->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], false);
  EXPECT_EQ(report["missing"], 1);
  EXPECT_EQ(report["unique"], 9);
  EXPECT_EQ(report["streams"][0]["missing_seqs"], nlohmann::json::array({5}));
  EXPECT_NE(sink->out().find("INCOMPLETE"), std::string::npos) << sink->out();
}

// Issue 21: without an end-of-stream the sink does not know how many items
// a stream has; its summary once said "INCOMPLETE: 3 of 0 items".
TEST(Pipeline, SinkSummarySaysOfUnknownForAStreamWithoutItsEndOfStream) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--idle-timeout",
                                    "60", "--progress", "off"});
  Injector producer(sink->WaitReady()["in"]);
  producer.Send(BatchFrame("endless", {0, 1, 2}));
  // Logged as the sink takes the frame's items, all under one lock.
  ASSERT_TRUE(sink->WaitForOutput(
      [](const std::string&, const std::string& err) {
        return err.find("stream endless: first message") != std::string::npos;
      },
      std::chrono::seconds(30)))
      << sink->err();
  sink->Signal(SIGTERM);
  ASSERT_EQ(sink->Wait(std::chrono::seconds(30)), 75) << sink->err();
  const std::string out = sink->out();
  EXPECT_NE(out.find("stream endless: INCOMPLETE, 3/unknown unique"), std::string::npos)
      << out;
  EXPECT_NE(out.find("INCOMPLETE: 3 of unknown items in 1 stream(s) (1 without an "
                     "end-of-stream yet)"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find(" of 0 items"), std::string::npos) << out;
}

TEST(Pipeline, SinkWithNothingToDoExits75AfterTheIdleTimeout) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*",
                                    "--idle-timeout", "0.3", "--progress", "off"});
  sink->WaitReady();
  EXPECT_EQ(sink->Wait(std::chrono::seconds(30)), 75);
}

// Duplicates (as replays will produce) are counted and never written twice.
TEST(Pipeline, DuplicateItemsAreCountedAndWrittenOnce) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                    dir.File("out.txt"), "--report",
                                    dir.File("report.json"), "--progress", "off",
                                    "--acks", "off"});
  Injector producer(sink->WaitReady()["in"]);
  producer.Send(BatchFrame("dup", {0, 1, 2}));
  producer.Send(BatchFrame("dup", {1, 2, 3}));
  producer.Send(EndOfStreamFrame("dup", 4));
  ASSERT_EQ(sink->Wait(std::chrono::seconds(30)), 0) << sink->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["received"], 6);
  EXPECT_EQ(report["unique"], 4);
  EXPECT_EQ(report["duplicates"], 2);
  std::string out = ReadFile(dir.File("out.txt"));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 4);
}

// Several producers into one sink: --streams K waits for K complete streams.
TEST(Pipeline, SinkWaitsForStreamsFromSeveralProducers) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--streams",
                                    "2", "--report", dir.File("report.json"),
                                    "--progress", "off"});
  auto ready = sink->WaitReady();
  std::string sink_in = ready["in"];
  auto a = Start("sluice-producer", {"--out", ">" + sink_in, "--count", "300",
                                     "--stream", "alpha", "--acks", ">" + ready["acks"]});
  auto b = Start("sluice-producer", {"--out", ">" + sink_in, "--count", "200",
                                     "--stream", "beta", "--acks", ">" + ready["acks"]});
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  EXPECT_EQ(a->Wait(kJobTimeout), 0);
  EXPECT_EQ(b->Wait(kJobTimeout), 0);
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["unique"], 500);
  EXPECT_EQ(report["streams_complete"], 2);
}

// Issue 4, 3: with acks, the producer exits 0 only when everything is
// acknowledged; without progress for --give-up it exits 75 and says what is
// outstanding. Here its frames go into a socket that never passes them on.
TEST(Pipeline, ProducerGivesUpWithExit75NamingWhatIsOutstanding) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--progress", "off"});
  std::string acks = sink->WaitReady()["acks"];
  zmq::context_t context(1);
  zmq::socket_t black_hole(context, zmq::socket_type::pull);
  black_hole.set(zmq::sockopt::linger, 0);
  black_hole.bind("tcp://127.0.0.1:*");
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer",
                      {"--out", ">" + black_hole.get(zmq::sockopt::last_endpoint),
                       "--acks", ">" + acks, "--count", "10", "--give-up", "1",
                       "--linger-ms", "0"},
                      nullptr, &err, /*acks_off=*/false),
            75);
  EXPECT_NE(err.find("outstanding: 10 items (seq 0 1 2 3 4 5 6 7 8 9) and the "
                     "end-of-stream"),
            std::string::npos)
      << err;
}

TEST(Pipeline, ProducerWhoseSinkAckSocketNeverAnswersExits69) {
  zmq::context_t context(1);
  zmq::socket_t nobody(context, zmq::socket_type::pull);
  nobody.bind("tcp://127.0.0.1:*");
  std::string unused = nobody.get(zmq::sockopt::last_endpoint);
  nobody.close();  // A port with nothing behind it.
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer",
                      {"--out", "@tcp://127.0.0.1:*", "--acks", ">" + unused,
                       "--give-up", "0.5", "--linger-ms", "0"},
                      nullptr, &err, /*acks_off=*/false),
            69);
  EXPECT_NE(err.find("did not answer"), std::string::npos) << err;
}

// The HOST:PORT a process started with --metrics serves on ("" if it
// never says).
std::string MetricsAddress(Process& process) {
  std::string address;
  process.WaitForOutput(
      [&](const std::string&, const std::string& err) {
        size_t at = err.find("serving metrics on http://");
        if (at == std::string::npos) return false;
        size_t begin = at + std::strlen("serving metrics on http://");
        address = err.substr(begin, err.find('/', begin) - begin);
        return true;
      },
      std::chrono::seconds(20));
  return address;
}

// STYLE "Counters are first-class": --metrics serves them to Prometheus.
TEST(Pipeline, MetricsEndpointServesTheCountersOfARunningStage) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--acks", "off",
                                    "--progress", "off"});
  std::string sink_in = sink->WaitReady()["in"];
  auto stage = Start("sluice-stage", {"--op", "pass", "--in", "@tcp://127.0.0.1:*",
                                      "--out", ">" + sink_in, "--metrics",
                                      "127.0.0.1:0"});
  std::string stage_in = stage->WaitReady()["in"];
  const std::string address = MetricsAddress(*stage);
  ASSERT_FALSE(address.empty());
  EXPECT_EQ(RunToExit("sluice-producer", {"--out", ">" + stage_in, "--count", "100"}), 0);
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  std::string metrics = HttpGet(address, "/metrics");
  EXPECT_NE(metrics.find("200 OK"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("sluice_rx_items_total{binary=\"sluice-stage\"} 100"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("sluice_tx_items_total{binary=\"sluice-stage\"} 100"),
            std::string::npos);
  EXPECT_NE(metrics.find("sluice_rejected_parse_error_total"), std::string::npos);
  stage->Signal(SIGTERM);
  EXPECT_EQ(stage->Wait(std::chrono::seconds(30)), 0);
}

// Issue 11, point 5: a stage whose output cannot keep up shows it at a
// glance: items held (a gauge) and time blocked on send (a counter), both
// in its counters and on --metrics.
TEST(Pipeline, ASlowNextHopShowsAsHeldItemsAndTimeBlockedOnSend) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--progress", "off",
                                    "--max-rate", "4000", "--hwm", "2"});
  auto sink_ready = sink->WaitReady();
  std::string sink_in = sink_ready["in"];
  auto stage = Start("sluice-stage", {"--op", "pass", "--in", "@tcp://127.0.0.1:*",
                                      "--out", ">" + sink_in, "--hwm", "2",
                                      "--metrics", "127.0.0.1:0", "--stats-interval", "0.1"});
  std::string stage_in = stage->WaitReady()["in"];
  const std::string address = MetricsAddress(*stage);
  ASSERT_FALSE(address.empty());
  // 16 MB, more than the kernel's socket buffers between two processes hold.
  TempDir dir;
  {
    std::ofstream input(dir.File("input.txt"));
    for (int i = 0; i < 8000; ++i) input << std::string(2000, 'a' + i % 26) << "\n";
  }
  // Fire-and-forget: with acks, the producer's flow control keeps the
  // queue in front of a slow sink to about 100 ms, and the stage is then
  // seldom blocked for long. Without, everything the sockets take piles
  // up in front of the sink, as behind any hop that cannot keep up.
  auto producer = Start("sluice-producer", {"--out", ">" + stage_in, "--input",
                                            dir.File("input.txt"), "--acks", "off"});
  ASSERT_TRUE(WaitUntilCounterAtLeast(*stage, "tx_blocked_us", 10'000)) << stage->err();
  // A gauge is a sample: the stage may just have handed everything on
  // when one is taken. Read it until it shows items held (while the job
  // still runs, the sink being the bottleneck, it soon does).
  const std::string held_line = "sluice_held_items{binary=\"sluice-stage\"} ";
  std::string metrics;
  double held = 0;
  for (int sample = 0; sample < 100 && held == 0 && !producer->Wait(std::chrono::seconds(0));
       ++sample) {
    metrics = HttpGet(address, "/metrics");
    EXPECT_NE(metrics.find("# TYPE sluice_held_items gauge"), std::string::npos) << metrics;
    const size_t at = metrics.find(held_line);
    ASSERT_NE(at, std::string::npos) << metrics;
    held = std::strtod(metrics.c_str() + at + held_line.size(), nullptr);
  }
  EXPECT_GT(held, 0) << metrics;
  EXPECT_NE(metrics.find("sluice_tx_blocked_us_total{binary=\"sluice-stage\"}"),
            std::string::npos);
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  stage->Signal(SIGTERM);
  EXPECT_EQ(stage->Wait(std::chrono::seconds(30)), 0);
  EXPECT_EQ(stage->LastCounters()["gauges"]["held_items"], 0);
}

TEST(Cli, MetricsAddressThatCannotBeServedExits69) {
  std::string err;
  EXPECT_EQ(RunToExit("sluice-stage", {"--metrics", "127.0.0.1:99999"}, nullptr, &err), 69);
  EXPECT_NE(err.find("cannot serve metrics"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-sink", {"--metrics", "nonsense"}, nullptr, &err), 64);
  EXPECT_NE(err.find("HOST:PORT"), std::string::npos) << err;
}

// Producer --input: one item per line of a file or of stdin.
// Issue 21: with --acks off, a worker slower than the producer got the
// whole stream only if the producer's frames drained within its bounded
// linger: the producer had sent everything plus the end-of-stream and was
// exiting, and whatever it still queued when the linger expired was
// dropped (the producer exited 69, the sink never completed). A complete
// stream is now flushed for as long as downstream takes it.
// 4,000 items of 8 KiB (32 MiB, more than the socket buffers and queues
// between the producer and the worker hold), a worker at about 1,000
// items/s, and --linger-ms 200, far shorter than the worker needs.
// Liveness (--heartbeat-ms) on and off: no process exits by a signal of its
// own when the producer leaves first (issue 21, point 1).
TEST(Pipeline, AcksOffWorkerSlowerThanTheProducerStillGetsTheWholeStream) {
  for (const std::string heartbeat : {"1000", "0"}) {
    SCOPED_TRACE("--heartbeat-ms " + heartbeat);
    constexpr int kItems = 4000;
    TempDir dir;
    {
      std::ofstream input(dir.File("in.txt"));
      for (int i = 0; i < kItems; ++i) {
        input << "result_" << i << std::string(8192, ' ') << "\n";
      }
    }
    auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                      dir.File("out.txt"), "--report",
                                      dir.File("report.json"), "--progress", "off",
                                      "--acks", "off", "--heartbeat-ms", heartbeat,
                                      "--idle-timeout", "20"});
    std::string sink_in = sink->WaitReady()["in"];
    auto producer = Start("sluice-producer",
                          {"--out", "@tcp://127.0.0.1:*", "--input", dir.File("in.txt"),
                           "--peers", "1", "--acks", "off", "--linger-ms", "200",
                           "--heartbeat-ms", heartbeat});
    std::string producer_out = producer->WaitReady()["out"];
    auto worker = Start("sluice-stage", {"--op", "pass", "--threads", "1", "--latency-ms", "1",
                                         "--in", ">" + producer_out, "--out", ">" + sink_in,
                                         "--heartbeat-ms", heartbeat});
    worker->WaitReady();
    EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
    ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
    ExpectCompleteExactly(ReadReport(dir.File("report.json")), kItems);
    worker->Signal(SIGTERM);
    EXPECT_EQ(worker->Wait(std::chrono::seconds(30)), 0) << worker->err();
  }
}

TEST(Pipeline, ProducerEmitsOneItemPerLineOfStdin) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                    dir.File("out.txt"), "--ordered", "--report",
                                    dir.File("report.json"), "--progress", "off"});
  auto ready = sink->WaitReady();
  std::string sink_in = ready["in"];
  auto producer = Start("sluice-producer", {"--out", ">" + sink_in, "--input", "-",
                                            "--acks", ">" + ready["acks"]},
                        std::string("alpha\nbeta\n\ngamma"));
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  EXPECT_EQ(ReadFile(dir.File("out.txt")), "alpha\nbeta\n\ngamma\n");
  EXPECT_EQ(ReadReport(dir.File("report.json"))["expected"], 4);
}

// Issue 9, goal 3: many latency-bound workers finish items far out of
// order, and none of that is taken for loss: without a fault, nothing is
// sent twice. (Before the producer's flow control, this job replayed
// 2,000 to 4,000 of its 24,000 items.)
TEST(Pipeline, NoReplayWithoutAFaultAcrossManyLatencyBoundWorkers) {
  TokenThenResultJob job;
  const int workers = 20;
  const int n = 1200 * workers;
  job.StartSink();
  job.hub_in = job.sink_in;  // producer -> token x 20 -> sink.
  job.StartProducer(n, workers);
  for (int i = 0; i < workers; ++i) {
    job.token.push_back(job.StartTokenWorker({"--threads", "2", "--latency-ms", "10"}));
  }
  ASSERT_EQ(job.Finish(), 0) << job.sink->err();
  ExpectCompleteExactly(job.Report(), n, /*no_duplicates=*/true);
  EXPECT_EQ(job.producer->LastCounters().value("retransmits", uint64_t{1}), 0u)
      << job.producer->err();
}

// Batching never waits: a line of a quiet input (a pipe that stays open)
// reaches the sink at once, not when a frame's worth of lines has gathered
// or the input ends.
TEST(Pipeline, ProducerSendsEachLineOfAQuietInputAtOnce) {
  TempDir dir;
  const std::string fifo = dir.File("input");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                    dir.File("out.txt"), "--progress", "off",
                                    "--stats-interval", "0.05"});
  auto ready = sink->WaitReady();
  auto producer = Start("sluice-producer", {"--out", ">" + ready["in"], "--input",
                                            fifo, "--acks", ">" + ready["acks"]});
  // Close-on-exec, so that no child keeps the write end (and EOF) away.
  std::FILE* input = std::fopen(fifo.c_str(), "we");
  ASSERT_NE(input, nullptr);
  std::fputs("one\n", input);
  std::fflush(input);
  EXPECT_TRUE(WaitUntilCounterAtLeast(*sink, "items_new", 1, std::chrono::seconds(10)))
      << sink->LastCounters().dump();
  std::fputs("two\n", input);
  std::fflush(input);
  EXPECT_TRUE(WaitUntilCounterAtLeast(*sink, "items_new", 2, std::chrono::seconds(10)))
      << sink->LastCounters().dump();
  std::fclose(input);
  ASSERT_EQ(sink->Wait(kJobTimeout), 0) << sink->err();
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  EXPECT_EQ(ReadFile(dir.File("out.txt")), "one\ntwo\n");
}

// Issue 8, point 6: a line over the item size limit deep in --input never
// leaves half a stream: it becomes a failed item in its place (dead-lettered
// with reason item_too_large), every later line keeps its seq, the stream
// completes and the sink exits 65.
TEST(Pipeline, OversizeInputLineIsAFailedItemAndTheStreamStillEnds) {
  TempDir dir;
  std::string path = dir.File("big.txt");
  {
    std::ofstream input(path);
    for (int i = 0; i < 1000; ++i) input << "line" << i << "\n";
    input << std::string(2 << 20, 'x') << "\n";  // Over the default limit.
    for (int i = 1001; i < 2000; ++i) input << "line" << i << "\n";
    input << std::string(300, 'y');  // A last line without a newline.
  }
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                    dir.File("out.txt"), "--ordered",
                                    "--dead-letter", dir.File("dead.jsonl"),
                                    "--report", dir.File("report.json")});
  auto ready = sink->WaitReady();
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer",
                      {"--out", ">" + ready["in"], "--acks", ">" + ready["acks"],
                       "--input", path, "--max-item-bytes", "300000"},
                      nullptr, &err, /*acks_off=*/false),
            0)
      << err;
  EXPECT_NE(err.find("line 1001 of --input"), std::string::npos) << err;
  EXPECT_EQ(sink->Wait(kJobTimeout), 65) << sink->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["expected"], 2001);
  EXPECT_EQ(report["failed"], 1);
  EXPECT_EQ(report["failed_by_reason"]["item_too_large"], 1);
  auto dead = nlohmann::json::parse(ReadFile(dir.File("dead.jsonl")));
  EXPECT_EQ(dead["seq"], 1000);
  EXPECT_EQ(dead["reason"], "item_too_large");
  EXPECT_EQ(dead["payload"].get<std::string>().size(), 256u);
  std::string out = ReadFile(dir.File("out.txt"));
  EXPECT_NE(out.find("line999\nline1001\n"), std::string::npos);
  EXPECT_EQ(out.substr(out.size() - 9 - 301), "line1999\n" + std::string(300, 'y') + "\n");
}

// The producer keeps a copy of each unacknowledged item for replay; with
// long lines, --window-mib bounds those copies, not just --window's count.
// 300 lines of 64 KiB through a sink held to 150 items/s: the producer's
// window never holds more than 1 MiB of them (16 items), and does fill up
// to it, and the output is exact.
TEST(Pipeline, LongLinesKeepTheProducersCopiesWithinWindowMib) {
  TempDir dir;
  const std::string path = dir.File("long.txt");
  std::string expected;
  {
    std::ofstream input(path);
    for (int i = 0; i < 300; ++i) {
      std::string line = "line" + std::to_string(i) + std::string(64 * 1024 - 10, 'x');
      input << line << "\n";
      expected += line + "\n";
    }
  }
  Chain chain;
  chain.Run({{"--op", "pass"}},
            {"--input", path, "--window-mib", "1", "--stats-interval", "0.05"},
            {"--ordered", "--max-rate", "150"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), expected);
  uint64_t most = 0;
  std::istringstream lines(chain.producer->err());
  for (std::string line; std::getline(lines, line);) {
    const size_t at = line.find("counters {");
    if (at == std::string::npos) continue;
    nlohmann::json counters = nlohmann::json::parse(line.substr(at + 9), nullptr, false);
    if (counters.is_discarded()) continue;
    most = std::max(most, counters["gauges"]["window_items"].get<uint64_t>());
  }
  EXPECT_LE(most, 16u);
  EXPECT_GE(most, 8u) << "the window never filled: the test would not notice a leak";
}

// Issue 8, point 5: a faulty producer's item beyond the count, before and
// after the end-of-stream, and a second end-of-stream with another count:
// errors in the report, never counted as part of the stream, exit 65.
TEST(Pipeline, ItemsBeyondTheCountAndAConflictingEndOfStreamAreErrorsWithExit65) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--acks", "off",
                                    "--report", dir.File("report.json"),
                                    "--streams", "0", "--stats-interval", "0.1"});
  std::string in = sink->WaitReady()["in"];
  {
    Injector injector(in);
    std::vector<uint64_t> seqs;
    for (uint64_t i = 0; i <= 100; ++i) seqs.push_back(i);  // 101 items.
    injector.Send(BatchFrame("faulty", seqs));
    injector.Send(EndOfStreamFrame("faulty", 100));
    injector.Send(BatchFrame("faulty", {150}));
    injector.Send(EndOfStreamFrame("faulty", 120));
    ASSERT_TRUE(WaitUntilCounterAtLeast(*sink, "rx_end_of_stream", 2));
  }
  sink->Signal(SIGTERM);
  EXPECT_EQ(sink->Wait(std::chrono::seconds(20)), 65) << sink->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["unique"], 100);
  EXPECT_EQ(report["expected"], 100);
  EXPECT_EQ(report["beyond_count"], 1);
  EXPECT_EQ(report["out_of_range"], 1);
  EXPECT_EQ(report["conflicting_ends"], 1);
  EXPECT_EQ(report["errors"], 3);
  EXPECT_NE(sink->out().find("3 ERRORS"), std::string::npos) << sink->out();
}

// Issue 8, point 4: --streams 1 reached while another stream is incomplete
// (a producer killed and restarted under a new id): the report says
// incomplete, and so does the exit code.
TEST(Pipeline, SinkNeverExitsZeroWhileAnotherStreamIsIncomplete) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--acks", "off",
                                    "--report", dir.File("report.json")});
  std::string in = sink->WaitReady()["in"];
  Injector injector(in);
  injector.Send(BatchFrame("killed", {0, 1, 2}));  // Never ended.
  injector.Send(BatchFrame("restarted", {0, 1}));
  injector.Send(EndOfStreamFrame("restarted", 2));
  EXPECT_EQ(sink->Wait(std::chrono::seconds(20)), 75) << sink->err();
  EXPECT_NE(sink->err().find("killed"), std::string::npos) << sink->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], false);
  EXPECT_EQ(report["streams_complete"], 1);
}

TEST(Pipeline, ItemSizeLimitIsAFlagWithItsBoundsChecked) {
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer", {"--max-item-bytes", "0"}, nullptr, &err), 64);
  EXPECT_NE(err.find("--max-item-bytes"), std::string::npos) << err;
}

// Issue 2 9f: a slow sink. The producer and the stages block instead of
// buffering: their resident memory stays bounded while a stream far larger
// than that bound flows through, and the run completes.
TEST(Pipeline, SlowSinkMakesProducerAndStagesBlockRatherThanGrow) {
  constexpr int kItems = 6000;
  constexpr size_t kPayload = 4096;  // 24 MiB in all.
  TempDir dir;
  {
    std::ofstream input(dir.File("input.txt"));
    for (int i = 0; i < kItems; ++i) input << std::string(kPayload, 'a' + i % 26) << "\n";
  }
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--report",
                                    dir.File("report.json"), "--max-rate", "3000",
                                    "--hwm", "4", "--progress", "off"});
  auto ready = sink->WaitReady();
  std::string sink_in = ready["in"];
  auto stage = Start("sluice-stage", {"--op", "pass", "--in", "@tcp://127.0.0.1:*",
                                      "--out", ">" + sink_in, "--hwm", "4",
                                      "--queue", "64", "--batch-items", "16"});
  std::string stage_in = stage->WaitReady()["in"];
  // The window bounds what the producer holds for replay: 500 x 4 KiB.
  auto producer = Start("sluice-producer", {"--out", ">" + stage_in, "--input",
                                            dir.File("input.txt"), "--hwm", "4",
                                            "--queue", "64", "--batch-items", "16",
                                            "--window", "500", "--acks",
                                            ">" + ready["acks"]});
  producer->WaitReady();
  long peak_producer = 0, peak_stage = 0;
  int samples = 0;
  // Sample memory every 50 ms until the sink is done (this wait is the
  // sampling period, not a synchronisation).
  while (!sink->Wait(std::chrono::milliseconds(50))) {
    peak_producer = std::max(peak_producer, producer->AnonKib());
    peak_stage = std::max(peak_stage, stage->AnonKib());
    ++samples;
  }
  EXPECT_EQ(sink->Wait(std::chrono::seconds(0)), 0) << sink->err();
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  stage->Signal(SIGTERM);
  EXPECT_EQ(stage->Wait(std::chrono::seconds(30)), 0);
  EXPECT_GT(samples, 10);  // The sink really was the bottleneck (~2 s).
  ExpectCompleteExactly(ReadReport(dir.File("report.json")), kItems);
  // The whole stream is 24 MiB; each process holds at most a few MiB of it
  // (about 3 measured). Anonymous memory, since what a process maps of its
  // shared libraries (libcurl's TLS stack for the stage) says nothing of
  // the items it holds.
  EXPECT_LT(peak_producer, 8 * 1024) << "producer holds " << peak_producer << " KiB";
  EXPECT_LT(peak_stage, 8 * 1024) << "stage holds " << peak_stage << " KiB";
}

}  // namespace
}  // namespace sluice::testing
