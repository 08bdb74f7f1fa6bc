// Issue 7, "Your own stages": ops of every shape in the real binaries, the
// exec co-process op and its faults, and failed items that reach the sink's
// dead-letter file instead of being lost.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "proto/sluice.pb.h"
#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

const std::string kPython = "/usr/bin/python3";
const std::string kExamples = std::string(SLUICE_SOURCE_DIR) + "/examples/python";

std::string WriteScript(const TempDir& dir, const std::string& name,
                        const std::string& text) {
  std::string path = dir.File(name);
  std::ofstream(path) << text;
  return path;
}

// Issue 7, point 3: the whole job through Python co-processes.
TEST(Ops, TokenThenResultJobRunsExactlyThroughPythonCoprocesses) {
  Chain chain;
  chain.Run({{"--op", "exec", "--exec", kPython + " " + kExamples + "/token.py", "--threads", "2"},
             {"--op", "exec", "--exec", kPython + " " + kExamples + "/result.py"}},
            {"--count", "3000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 3000);
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), ExpectedResults(3000));
  // The co-process's stderr is in the stage's log, one line per line.
  EXPECT_NE(chain.stages[0]->err().find("token.py ready"), std::string::npos);
  EXPECT_EQ(chain.stages[0]->LastCounters()["processed_0_exec"], 3000);
}

// Issue 7, point 4: items an op fails reach the sink marked failed, go to
// the dead-letter file with their reason, and the stream completes (65).
TEST(Ops, FailedItemsAreDeadLetteredAndTheStreamCompletesWithExit65) {
  Chain chain;
  std::string input = chain.dir.File("in.txt");
  std::ofstream(input) << "token_0\nnot a token\ntoken_2\n\xff\xfe\n";
  chain.Run({{"--op", "exec", "--exec", kPython + " " + kExamples + "/result.py"}},
            {"--input", input, "--stream", "dl"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 65) << chain.sink->err();
  nlohmann::json report = chain.Report();
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["unique"], 4);
  EXPECT_EQ(report["failed"], 2);
  EXPECT_EQ(report["failed_by_reason"]["not_a_token"], 2);
  EXPECT_EQ(report["written"], 2);
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), "result_0\nresult_2\n");
  auto dead = chain.DeadLetters();
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_EQ(dead[0]["stream"], "dl");
  EXPECT_EQ(dead[0]["seq"], 1);
  EXPECT_EQ(dead[0]["payload"], "not a token");
  EXPECT_EQ(dead[0]["op"], "exec");
  EXPECT_EQ(dead[0]["reason"], "not_a_token");
  EXPECT_EQ(dead[0]["attempts"], 1);  // A permanent failure: no retry.
  EXPECT_NE(dead[0]["worker"].get<std::string>().find("/exec#0"), std::string::npos);
  EXPECT_EQ(dead[1]["payload_base64"], "//4=");  // Not UTF-8: base64.
  EXPECT_NE(chain.sink->out().find("2 failed"), std::string::npos) << chain.sink->out();
}

// Issue 7, point 4: acks, replay and dedup hold for failed items as for any.
// A worker is killed -9 while half the items fail: the producer replays what
// it held, and every failed item is dead-lettered exactly once.
TEST(Ops, FailedItemsSurviveAKilledWorkerAndAreDeadLetteredExactlyOnce) {
  TempDir dir;
  std::string input = dir.File("in.txt");
  constexpr int kItems = 20000;
  {
    std::ofstream in(input);
    for (int i = 0; i < kItems; ++i) in << (i % 2 ? "bad_" : "token_") << i << "\n";
  }
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
                                    "--report", dir.File("report.json"), "--dead-letter",
                                    dir.File("dead.jsonl"), "--idle-timeout", "60",
                                    "--progress", "off"});
  auto sink_ready = sink->WaitReady();
  auto producer = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*", "--input", input,
                                            "--peers", "2", "--acks", ">" + sink_ready["acks"],
                                            "--rto-min-ms", "500"});
  std::string producer_out = producer->WaitReady()["out"];
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 0; i < 2; ++i) {
    // Up to 1 ms per item: the job lasts seconds, long enough to kill one.
    workers.push_back(Start("sluice-stage", {"--op", "exec", "--exec",
                                             kPython + " " + kExamples + "/result.py 1",
                                             "--in", ">" + producer_out, "--out",
                                             ">" + sink_ready["in"], "--stats-interval", "0.1"}));
    workers.back()->WaitReady();
  }
  ASSERT_TRUE(WaitUntilBusy(*workers[0], "processed_0_exec"));
  workers[0]->Signal(SIGKILL);
  ASSERT_EQ(sink->Wait(kJobTimeout), 65) << sink->err();
  EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["unique"], kItems);
  EXPECT_EQ(report["failed"], kItems / 2);
  EXPECT_EQ(report["failed_by_reason"]["not_a_token"], kItems / 2);
  EXPECT_EQ(report["written"], kItems / 2);
  std::set<uint64_t> dead_seqs;
  std::istringstream dead(ReadFile(dir.File("dead.jsonl")));
  for (std::string line; std::getline(dead, line);) {
    auto seq = nlohmann::json::parse(line)["seq"].get<uint64_t>();
    EXPECT_EQ(seq % 2, 1u);
    EXPECT_TRUE(dead_seqs.insert(seq).second) << "dead-lettered twice: " << seq;
  }
  EXPECT_EQ(dead_seqs.size(), static_cast<size_t>(kItems / 2));
  workers[1]->Signal(SIGTERM);
  EXPECT_EQ(workers[1]->Wait(std::chrono::seconds(30)), 0);
}

// Issue 7, point 3: a co-process that dies is restarted and the item it held
// is retried; nothing is lost or failed.
TEST(Ops, CoprocessThatDiesIsRestartedAndTheItemItHeldIsRetried) {
  Chain chain;
  std::string marker = chain.dir.File("died-once");
  std::string script = WriteScript(chain.dir, "dies.py",
      "import os, sys\n"
      "for line in sys.stdin:\n"
      "    if line == '500\\n' and not os.path.exists('" + marker + "'):\n"
      "        open('" + marker + "', 'w').close()\n"
      "        os._exit(3)\n"
      "    sys.stdout.write('token_' + line)\n"
      "    sys.stdout.flush()\n");
  chain.Run({{"--op", "exec,result", "--exec", kPython + " " + script,
              "--threads", "1,1", "--latency-ms", "0", "--retry-backoff-ms", "10"}},
            {"--count", "2000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 2000);
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), ExpectedResults(2000));
  nlohmann::json counters = chain.stages[0]->LastCounters();
  EXPECT_GE(counters["retries_0_exec"].get<int>(), 1);
  EXPECT_EQ(counters["failed_0_exec"], 0);
  std::string log = chain.stages[0]->err();
  size_t first = log.find("started co-process");
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(log.find("started co-process", first + 1), std::string::npos) << log;
}

// Issue 21, part 2: one item waiting for its retry once stalled the whole
// stage (the backoff slept on its I/O thread). The shape of that job: a
// cheap op that fails 1% of the items transiently once, a 500 ms backoff.
// Every item is written once, none fails, and each picked item was retried
// exactly once. (The speed is the bench's: sluice-bench --retry.)
TEST(Ops, OnePercentTransientFailuresWithA500MsBackoffCompleteExactly) {
  constexpr int kItems = 20000;
  Chain chain;
  // The producer waits longer than a retry before it resends: no replay
  // is needed, and none happens.
  chain.Run({{"--op", "pass", "--pass-fail-percent", "1", "--retry-backoff-ms", "500"}},
            {"--count", std::to_string(kItems), "--rto-min-ms", "5000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  nlohmann::json report = chain.Report();
  ExpectCompleteExactly(report, kItems);
  EXPECT_EQ(report["failed"], 0);
  std::string expected;
  for (int i = 0; i < kItems; ++i) expected += std::to_string(i) + "\n";
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), expected);
  nlohmann::json counters = chain.stages[0]->LastCounters();
  EXPECT_EQ(counters["retries_0_pass"], kItems / 100);  // seq % 100 == 0.
  EXPECT_EQ(counters["failed_0_pass"], 0);
}

// Issue 21, point 2: an item waiting for its retry holds back no other,
// neither in the stage nor in the producer's window: with --window 1000,
// seq 0 (which fails once, then waits 500 ms) is written after seq 1001,
// which the producer could not send while 0 was unacknowledged if its
// window's span, not only its count, were bounded by --window.
TEST(Ops, AnItemWaitingForItsRetryHoldsBackNoOtherEvenInTheProducersWindow) {
  constexpr int kItems = 20000;
  Chain chain;
  chain.Run({{"--op", "pass", "--pass-fail-percent", "1", "--retry-backoff-ms", "500"}},
            {"--count", std::to_string(kItems), "--window", "1000", "--rto-min-ms", "5000"},
            {});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  nlohmann::json report = chain.Report();
  ExpectCompleteExactly(report, kItems);
  std::vector<std::string> lines;
  std::istringstream out(ReadFile(chain.dir.File("out.txt")));
  for (std::string line; std::getline(out, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), static_cast<size_t>(kItems));
  const auto at = [&](const std::string& item) {
    return std::find(lines.begin(), lines.end(), item) - lines.begin();
  };
  EXPECT_GT(at("0"), at("1001")) << "seq 0 was written before seq 1001";
  EXPECT_EQ(chain.stages[0]->LastCounters()["retries_0_pass"], kItems / 100);
}

// Issue 7, point 3: a co-process that hangs is killed after --op-timeout-ms;
// the item it held fails as "timeout" once its retries are spent.
TEST(Ops, CoprocessThatHangsIsKilledAfterTheOpTimeout) {
  Chain chain;
  std::string script = WriteScript(chain.dir, "hangs.py",
      "import sys, time\n"
      "for line in sys.stdin:\n"
      "    if line == '5\\n':\n"
      "        time.sleep(3600)\n"
      "    sys.stdout.write('token_' + line)\n"
      "    sys.stdout.flush()\n");
  chain.Run({{"--op", "exec,result", "--exec", kPython + " " + script, "--threads", "1,1",
              "--latency-ms", "0", "--op-timeout-ms", "300", "--retries", "1",
              "--retry-backoff-ms", "10"}},
            {"--count", "20", "--stream", "hang"});
  ASSERT_EQ(chain.Finish(), 65) << chain.sink->err();
  nlohmann::json report = chain.Report();
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["failed"], 1);
  EXPECT_EQ(report["failed_by_reason"]["timeout"], 1);
  auto dead = chain.DeadLetters();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0]["seq"], 5);
  EXPECT_EQ(dead[0]["payload"], "5");
  EXPECT_EQ(dead[0]["attempts"], 2);
  EXPECT_EQ(report["written"], 19);
}

// Issue 7, bad input: a line-framed payload holding a newline is an error of
// that item, never split into two.
TEST(Ops, LineFramedPayloadHoldingANewlineFailsThatItemInsteadOfSplittingIt) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
                                    "--dead-letter", dir.File("dead.jsonl"), "--report",
                                    dir.File("report.json"), "--progress", "off",
                                    "--acks", "off", "--idle-timeout", "60"});
  std::string sink_in = sink->WaitReady()["in"];
  Injector into_stage;
  auto stage = Start("sluice-stage", {"--op", "exec", "--exec", "cat", "--in",
                                      ">" + into_stage.address(), "--out", ">" + sink_in});
  stage->WaitReady();
  wire::Envelope e;
  e.set_version(1);
  for (int i = 0; i < 3; ++i) {
    wire::Item* item = e.mutable_batch()->add_items();
    item->set_stream("nl");
    item->set_seq(i);
    item->set_payload(i == 1 ? "two\nlines" : "line" + std::to_string(i));
  }
  into_stage.Send(e.SerializeAsString());
  into_stage.Send(EndOfStreamFrame("nl", 3));
  ASSERT_EQ(sink->Wait(kJobTimeout), 65) << sink->err();
  EXPECT_EQ(ReadFile(dir.File("out.txt")), "line0\nline2\n");
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["failed_by_reason"]["newline_in_payload"], 1);
  EXPECT_NE(ReadFile(dir.File("dead.jsonl")).find("\"payload\":\"two\\nlines\""),
            std::string::npos);
  stage->Signal(SIGTERM);
  EXPECT_EQ(stage->Wait(std::chrono::seconds(30)), 0);
}

// Issue 7, point 3: --exec-framing lp carries any bytes, newlines included.
TEST(Ops, LengthPrefixedFramingCarriesAnyBytes) {
  Chain chain;
  std::string script = WriteScript(chain.dir, "lp.py",
      "import struct, sys\n"
      "r, w = sys.stdin.buffer, sys.stdout.buffer\n"
      "while True:\n"
      "    head = r.read(4)\n"
      "    if len(head) < 4: break\n"
      "    data = r.read(struct.unpack('>I', head)[0])\n"
      "    out = b'result_' + data + b'\\nline2'\n"
      "    w.write(struct.pack('>I', len(out)) + out)\n"
      "    w.flush()\n");
  // Payloads holding a newline need an output format that frames them.
  chain.Run({{"--op", "exec", "--exec", kPython + " " + script, "--exec-framing", "lp"}},
            {"--count", "500"}, {"--output-format", "lp"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 500);
  std::string out = ReadFile(chain.dir.File("out.txt"));
  const std::string last = "result_499\nline2";
  EXPECT_NE(out.find(std::string("\0\0\0\x10", 4) + last), std::string::npos);
  EXPECT_EQ(out.size(), 500 * 4 + 500 * 13 + 10 * 1 + 90 * 2 + 400 * 3);
}

// Issue 8, point 7: in the lines format, a payload holding a newline is
// never split into two lines: the item fails (newline_in_payload), goes to
// the dead letters, and the sink exits 65; jsonl carries it intact.
TEST(Ops, PayloadHoldingANewlineIsRefusedByLinesAndKeptByJsonl) {
  // A co-process (lp framing, so it can answer with a newline) that turns
  // item 7 into "a\nb" and every other n into "rN".
  const std::string script_body =
      "import struct, sys\n"
      "r, w = sys.stdin.buffer, sys.stdout.buffer\n"
      "while True:\n"
      "    head = r.read(4)\n"
      "    if len(head) < 4: break\n"
      "    n = r.read(struct.unpack('>I', head)[0])\n"
      "    out = b'a\\nb' if n == b'7' else b'r' + n\n"
      "    w.write(struct.pack('>I', len(out)) + out)\n"
      "    w.flush()\n";
  {
    Chain chain;
    std::string script = WriteScript(chain.dir, "nl.py", script_body);
    chain.Run({{"--op", "exec", "--exec", kPython + " " + script, "--exec-framing", "lp"}},
              {"--count", "20"});
    ASSERT_EQ(chain.Finish(), 65) << chain.sink->err();
    nlohmann::json report = chain.Report();
    EXPECT_EQ(report["failed_by_reason"]["newline_in_payload"], 1) << report.dump();
    EXPECT_EQ(report["written"], 19);
    auto dead = nlohmann::json::parse(ReadFile(chain.dir.File("dead.jsonl")));
    EXPECT_EQ(dead["seq"], 7);
    EXPECT_EQ(dead["payload"], "a\nb");
    EXPECT_EQ(ReadFile(chain.dir.File("out.txt")).find("a\n"), std::string::npos);
  }
  {
    Chain chain;
    std::string script = WriteScript(chain.dir, "nl.py", script_body);
    chain.Run({{"--op", "exec", "--exec", kPython + " " + script, "--exec-framing", "lp"}},
              {"--count", "20"},
              {"--output-format", "jsonl", "--ordered"});
    ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
    std::istringstream lines(ReadFile(chain.dir.File("out.txt")));
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
      auto j = nlohmann::json::parse(line);
      EXPECT_EQ(j["seq"], n);
      EXPECT_EQ(j["stream"], chain.Report()["streams"][0]["stream"]);
      EXPECT_EQ(j["payload"], n == 7 ? "a\nb" : "r" + std::to_string(n));
      ++n;
    }
    EXPECT_EQ(n, 20);
  }
}

// Issue 7, point 1 (async shape), and issue 10's async slots: token and
// result waiting on timers of one loop thread, many items in flight.
TEST(Ops, AsyncTokenAndResultWithConcurrencyRunTheJobExactly) {
  Chain chain;
  chain.Run({{"--op", "token,result", "--concurrency", "200", "--latency-ms", "10,5"}},
            {"--count", "5000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 5000);
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), ExpectedResults(5000));
}

// Issue 11, point 4: --log-format json gives one JSON object per line with
// stable names, whatever the message holds (here a co-process's stderr
// with quotes, a backslash, a tab and a control character), and the
// counters as an object.
TEST(Ops, JsonLogFormatIsOneObjectPerLineWhateverTheMessageHolds) {
  Chain chain;
  const std::string script = WriteScript(
      chain.dir, "noisy.sh",
      "printf 'said \"hi\" \\\\ tab\\t ctl\\001 end\\n' >&2\nexec cat\n");
  chain.Run({{"--op", "exec", "--exec", "sh " + script, "--log-format", "json"}},
            {"--count", "100", "--log-format", "json"}, {"--log-format", "json"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  int counters = 0, noisy = 0;
  for (Process* p : {chain.stages[0].get(), chain.producer.get(), chain.sink.get()}) {
    std::istringstream lines(p->err());
    for (std::string line; std::getline(lines, line);) {
      auto event = nlohmann::json::parse(line, nullptr, false);
      ASSERT_TRUE(event.is_object()) << "not a JSON object: " << line;
      for (const char* field : {"ts", "level", "program", "pid", "msg"}) {
        EXPECT_TRUE(event.contains(field)) << field << " missing: " << line;
      }
      if (event["msg"] == "counters") {
        EXPECT_TRUE(event["counters"].is_object()) << line;
        ++counters;
      }
      if (event["msg"].get<std::string>().find("said \"hi\" \\ tab\t ctl\x01 end") !=
          std::string::npos) {
        ++noisy;
      }
    }
  }
  EXPECT_GT(counters, 0);
  EXPECT_EQ(noisy, 1) << chain.stages[0]->err();
  EXPECT_EQ(chain.stages[0]->err().find("counters {"), std::string::npos);
}

// Issue 10, point 1: an async worker holds its slots' items and two
// frames behind them, not the stream: a 60 MB stream through 2000 slots
// leaves its peak memory under 40 MiB (about 25 measured, as for 7.5 MB).
TEST(Ops, AsyncWorkerMemoryIsBoundedByItsSlotsNotByTheStream) {
  Chain chain;
  const std::string input = chain.dir.File("in.txt");
  {
    std::ofstream out(input);
    const std::string payload(500, 'x');
    for (int i = 0; i < 120000; ++i) out << i << payload << "\n";
  }
  chain.Run({{"--op", "token", "--concurrency", "2000", "--latency-ms", "10"}},
            {"--input", input});
  ASSERT_EQ(chain.sink->Wait(kJobTimeout), 0) << chain.sink->err();
  const std::string status =
      ReadFile("/proc/" + std::to_string(chain.stages[0]->pid()) + "/status");
  const size_t at = status.find("VmHWM:");
  ASSERT_NE(at, std::string::npos);
  const long peak_kib = std::strtol(status.c_str() + at + 6, nullptr, 10);
  EXPECT_LT(peak_kib, 40 * 1024) << "an async worker grew to " << peak_kib << " KiB";
  ExpectCompleteExactly(chain.Report(), 120000);
  EXPECT_EQ(chain.Finish(), 0);
}

// Issue 10, point 3: the simulated token op with --batch N costs one
// latency per call of up to N items, not one per item.
TEST(Ops, BatchedTokenCostsOneCallPerBatchAndTheJobStaysExact) {
  Chain chain;
  chain.Run({{"--op", "token,result", "--batch", "100,1", "--batch-wait-ms", "20",
              "--concurrency", "400,200", "--latency-ms", "10,5"}},
            {"--count", "5000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 5000);
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), ExpectedResults(5000));
  nlohmann::json counters = chain.stages[0]->LastCounters();
  EXPECT_EQ(counters["calls_1_result"], 5000) << "result is not batched";
  // Calls are cut at 100 items or 20 ms: mostly full ones.
  EXPECT_LE(counters["calls_0_token"].get<int>(), 5000 / 20) << counters.dump();
  EXPECT_GE(counters["calls_0_token"].get<int>(), 5000 / 100);
}

// Issue 10, point 3: a batch is cut as soon as N items are there, never
// held for --batch-wait-ms: with a wait of 100 s and a count that is a
// multiple of N, every call is full and the job ends long before any wait
// would (the sink's idle timeout of 60 s would fail it otherwise).
TEST(Ops, FullBatchIsCutAtOnceNotAfterTheWait) {
  Chain chain;
  chain.Run({{"--op", "token", "--batch", "50", "--batch-wait-ms", "100000",
              "--latency-ms", "1"}},
            {"--count", "1000"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 1000);
  EXPECT_EQ(chain.stages[0]->LastCounters()["calls_0_token"], 1000 / 50);
}

// Issue 7, point 2: `make install`, then an op built out of tree against the
// installed package (examples/cpp-op) gives a sluice-stage that knows it.
TEST(Ops, AnOpBuiltOutOfTreeAgainstTheInstalledSluiceRunsInAJob) {
  TempDir work;
  const std::string cmake = SLUICE_CMAKE;
  auto run = [](const std::string& command) {
    std::string quiet = command + " > /dev/null 2>&1";
    int rc = std::system(quiet.c_str());
    EXPECT_EQ(rc, 0) << command;
    return rc == 0;
  };
  ASSERT_TRUE(run(cmake + " --install '" + SLUICE_BUILD_DIR + "' --prefix '" +
                  work.File("prefix") + "'"));
  ASSERT_TRUE(run(cmake + " -S '" + SLUICE_SOURCE_DIR + "/examples/cpp-op' -B '" +
                  work.File("build") + "' -DCMAKE_PREFIX_PATH='" + work.File("prefix") + "'"));
  ASSERT_TRUE(run(cmake + " --build '" + work.File("build") + "'"));
  const std::string binary = work.File("build") + "/my-stage";
  auto help = std::make_unique<Process>(std::vector<std::string>{binary, "--help"});
  ASSERT_EQ(help->Wait(std::chrono::seconds(30)), 0);
  EXPECT_NE(help->out().find("upper"), std::string::npos) << help->out();

  Chain chain;
  chain.stage_binary = binary;
  chain.Run({{"--op", "token,upper", "--latency-ms", "0", "--upper-suffix", "!"}},
            {"--count", "1000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 1000);
  std::string expected;
  for (int i = 0; i < 1000; ++i) expected += "TOKEN_" + std::to_string(i) + "!\n";
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), expected);
}

// Issue 7, bad input: the new flags' errors are clear, with the right codes.
TEST(Ops, OpFlagsAreValidatedAndShownByOpHelp) {
  std::string out, err;
  EXPECT_EQ(RunToExit("sluice-stage", {"--op", "exec", "--help"}, &out), 0);
  EXPECT_NE(out.find("Flags of op exec"), std::string::npos) << out;
  EXPECT_NE(out.find("--exec-framing"), std::string::npos) << out;
  EXPECT_EQ(RunToExit("sluice-stage", {"--help"}, &out), 0);
  for (const char* op : {"token", "result", "pass", "exec"}) {
    EXPECT_NE(out.find(std::string("  ") + op + " "), std::string::npos) << op << out;
  }
  EXPECT_EQ(RunToExit("sluice-stage", {"--op", "tokn"}, nullptr, &err), 64);
  EXPECT_NE(err.find("registered ops: exec, http, pass, result, token"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-stage", {"--op", "exec", "--exec", "cat", "--exec-framing", "xml"},
                      nullptr, &err), 64);
  EXPECT_NE(err.find("--exec-framing"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-stage", {"--op", "exec"}, nullptr, &err), 64);
  EXPECT_NE(err.find("--exec"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-stage", {"--op", "exec", "--exec", "/no/such/program --x"},
                      nullptr, &err), 69);
  EXPECT_NE(err.find("/no/such/program"), std::string::npos) << err;
  EXPECT_NE(err.find("No such file"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-stage", {"--op", "exec,pass", "--exec", "cat", "--concurrency", "5,5"}, nullptr, &err), 64);
  EXPECT_NE(err.find("no asynchronous form"), std::string::npos) << err;
}

}  // namespace
}  // namespace sluice::testing
