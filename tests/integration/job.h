// tests/integration/job.h
//
// Starts the real binaries of a Sluice job on 127.0.0.1 with ephemeral ports,
// each after the READY line of whatever it connects to, and an Injector that
// sends raw frames into a running process's socket.
#ifndef SLUICE_TESTS_INTEGRATION_JOB_H_
#define SLUICE_TESTS_INTEGRATION_JOB_H_

#include <algorithm>
#include <memory>
#include <signal.h>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "tests/harness/process.h"

namespace sluice::testing {

using Args = std::vector<std::string>;

// Starts a binary. A sink without --acks publishes its acks on an ephemeral
// port (READY ... acks=ADDR), so that tests never collide on 5559.
inline std::unique_ptr<Process> Start(const std::string& binary, Args args,
                                      std::optional<std::string> input = {}) {
  if (binary == "sluice-sink" &&
      std::find(args.begin(), args.end(), "--acks") == args.end()) {
    args.insert(args.end(), {"--acks", "@tcp://127.0.0.1:*"});
  }
  args.insert(args.begin(), BinaryPath(binary));
  return std::make_unique<Process>(
      std::move(args), std::move(input), std::vector<std::string>{},
      [](const std::string& message) { ADD_FAILURE() << message; });
}

// Runs a binary to completion and returns its exit code.
// A producer runs with --acks off unless `acks_off` is false.
inline int RunToExit(const std::string& binary, Args args,
                     std::string* out = nullptr, std::string* err = nullptr,
                     bool acks_off = true) {
  if (binary == "sluice-producer" && acks_off) {
    args.insert(args.end(), {"--acks", "off"});
  }
  auto p = Start(binary, std::move(args));
  auto code = p->Wait(std::chrono::seconds(30));
  if (out) *out = p->out();
  if (err) *err = p->err();
  return code.value_or(-1);
}

// A bound PUSH socket of the test's own, for sending raw frames.
class Injector {
 public:
  // Binds 127.0.0.1 on an ephemeral port (a stage connects to address()).
  Injector() : socket_(context_, zmq::socket_type::push) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndtimeo, 20000);
    socket_.bind("tcp://127.0.0.1:*");
    address_ = socket_.get(zmq::sockopt::last_endpoint);
  }
  // Connects to a bound socket of a running process instead.
  explicit Injector(const std::string& connect_to)
      : socket_(context_, zmq::socket_type::push) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndtimeo, 20000);
    socket_.connect(connect_to);
    address_ = connect_to;
  }
  const std::string& address() const { return address_; }
  // Blocks (up to 20 s) until a peer takes the frame.
  void Send(const std::string& bytes) {
    zmq::message_t frame(bytes.data(), bytes.size());
    ASSERT_TRUE(socket_.send(frame, zmq::send_flags::none))
        << "nobody took a frame from " << address_;
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::string address_;
};

// Serialized envelopes for injection.
std::string BatchFrame(const std::string& stream,
                       const std::vector<uint64_t>& seqs,
                       const std::string& payload_prefix = "result_");
std::string EndOfStreamFrame(const std::string& stream, uint64_t count);
// A valid batch with the version field set to `version`.
std::string VersionedFrame(uint32_t version);

// A plain HTTP/1.0 GET to "IPV4:PORT"; the whole response, "" on failure.
std::string HttpGet(const std::string& address, const std::string& path);

inline nlohmann::json ReadReport(const std::string& path) {
  std::string text = ReadFile(path);
  auto report = nlohmann::json::parse(text, nullptr, false);
  EXPECT_FALSE(report.is_discarded()) << "report at " << path << ": " << text;
  return report;
}

constexpr auto kJobTimeout = std::chrono::seconds(120);

inline std::string ExpectedResults(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "result_" + std::to_string(i) + "\n";
  return s;
}

// producer -> token x T -> hub -> result x R -> sink, as in `make demo`.
struct TokenThenResultJob {
  TempDir dir;
  std::unique_ptr<Process> sink, hub, producer;
  std::vector<std::unique_ptr<Process>> token, result;
  std::string sink_in, sink_acks, hub_in, hub_out, producer_out;

  void StartSink(Args extra = {}) {
    Args args = {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
                 "--ordered", "--report", dir.File("report.json"),
                 "--idle-timeout", "60", "--progress", "off"};
    args.insert(args.end(), extra.begin(), extra.end());
    sink = Start("sluice-sink", args);
    auto ready = sink->WaitReady();
    sink_in = ready["in"];
    sink_acks = ready["acks"];
  }
  void StartHub() {
    hub = Start("sluice-stage", {"--op", "pass", "--in", "@tcp://127.0.0.1:*",
                                 "--out", "@tcp://127.0.0.1:*"});
    auto ready = hub->WaitReady();
    hub_in = ready["in"];
    hub_out = ready["out"];
  }
  void StartResultWorkers(int count, Args extra = {}) {
    for (int i = 0; i < count; ++i) {
      Args args = {"--op", "result", "--in", ">" + hub_out, "--out", ">" + sink_in};
      args.insert(args.end(), extra.begin(), extra.end());
      result.push_back(Start("sluice-stage", args));
      result.back()->WaitReady();
    }
  }
  void StartProducer(int n, int peers, Args extra = {}) {
    Args args = {"--out", "@tcp://127.0.0.1:*", "--count", std::to_string(n),
                 "--peers", std::to_string(peers), "--acks", ">" + sink_acks};
    args.insert(args.end(), extra.begin(), extra.end());
    producer = Start("sluice-producer", args);
    producer_out = producer->WaitReady()["out"];
  }
  std::unique_ptr<Process> StartTokenWorker(Args extra = {}) {
    Args args = {"--op", "token", "--in", ">" + producer_out, "--out", ">" + hub_in};
    args.insert(args.end(), extra.begin(), extra.end());
    auto worker = Start("sluice-stage", args);
    worker->WaitReady();
    return worker;
  }
  void StartAll(int n, int token_workers, int result_workers,
                Args token_extra = {}, Args result_extra = {}) {
    StartSink();
    StartHub();
    StartResultWorkers(result_workers, result_extra);
    StartProducer(n, token_workers);
    for (int i = 0; i < token_workers; ++i) token.push_back(StartTokenWorker(token_extra));
  }
  // Waits for the sink and the producer, then stops every stage with SIGTERM
  // and checks that each drained and exited 0.
  int Finish() {
    int sink_code = sink->Wait(kJobTimeout).value_or(-1);
    EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
    std::vector<Process*> stages;
    for (auto& p : token) stages.push_back(p.get());
    if (hub) stages.push_back(hub.get());
    for (auto& p : result) stages.push_back(p.get());
    for (Process* p : stages) p->Signal(SIGTERM);
    for (Process* p : stages) EXPECT_EQ(p->Wait(std::chrono::seconds(60)), 0) << p->err();
    return sink_code;
  }
  // For a sink started with --streams 0: once the producer has every ack
  // (so the stream is complete at the sink), stops the stages, which drain
  // into the still-running sink, and then the sink. Returns its exit code.
  int FinishInOrder() {
    EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
    // Upstream first, so that each stage drains into a live next hop.
    std::vector<std::vector<Process*>> waves(3);
    for (auto& p : token) waves[0].push_back(p.get());
    if (hub) waves[1].push_back(hub.get());
    for (auto& p : result) waves[2].push_back(p.get());
    for (const auto& wave : waves) {
      for (Process* p : wave) p->Signal(SIGTERM);
      for (Process* p : wave) {
        EXPECT_EQ(p->Wait(std::chrono::seconds(60)).value_or(-1), 0) << p->err();
      }
    }
    sink->Signal(SIGTERM);
    return sink->Wait(kJobTimeout).value_or(-1);
  }
  nlohmann::json Report() { return ReadReport(dir.File("report.json")); }
};

// producer (binds) -> one stage per element of `stages` in a row (each
// connects; a hub would be needed for several workers per stage) -> sink.
// Here every stage is a single process, so each binds its output for the
// next one.
struct Chain {
  TempDir dir;
  std::unique_ptr<Process> sink, producer;
  std::vector<std::unique_ptr<Process>> stages;
  std::string stage_binary = BinaryPath("sluice-stage");

  void Run(const std::vector<Args>& stage_args, Args producer_args,
           Args sink_args = {}) {
    Args s = {"--in", "@tcp://127.0.0.1:*", "--output", dir.File("out.txt"),
              "--report", dir.File("report.json"), "--dead-letter",
              dir.File("dead.jsonl"), "--idle-timeout", "60", "--progress", "off"};
    s.insert(s.end(), sink_args.begin(), sink_args.end());
    sink = Start("sluice-sink", s);
    auto ready = sink->WaitReady();
    std::string next_in = ready["in"];
    // Start from the sink backwards: each stage binds its input for the one
    // before it and connects to the one after.
    std::vector<std::unique_ptr<Process>> reversed;
    for (auto it = stage_args.rbegin(); it != stage_args.rend(); ++it) {
      Args args = *it;
      args.insert(args.end(), {"--in", "@tcp://127.0.0.1:*", "--out", ">" + next_in,
                               "--stats-interval", "0.1"});
      args.insert(args.begin(), stage_binary);
      reversed.push_back(std::make_unique<Process>(
          args, std::nullopt, std::vector<std::string>{},
          [](const std::string& message) { ADD_FAILURE() << message; }));
      next_in = reversed.back()->WaitReady()["in"];
    }
    for (auto it = reversed.rbegin(); it != reversed.rend(); ++it) {
      stages.push_back(std::move(*it));
    }
    Args p = {"--out", ">" + next_in, "--acks", ">" + ready["acks"]};
    p.insert(p.end(), producer_args.begin(), producer_args.end());
    producer = Start("sluice-producer", p);
    producer->WaitReady();
  }
  // Waits for the sink and the producer, stops the stages (each must exit
  // 0), returns the sink's exit code.
  int Finish() {
    int code = sink->Wait(kJobTimeout).value_or(-1);
    EXPECT_EQ(producer->Wait(kJobTimeout), 0) << producer->err();
    for (auto& stage : stages) stage->Signal(SIGTERM);
    for (auto& stage : stages) EXPECT_EQ(stage->Wait(std::chrono::seconds(30)), 0) << stage->err();
    return code;
  }
  nlohmann::json Report() { return ReadReport(dir.File("report.json")); }
  std::vector<nlohmann::json> DeadLetters() {
    std::vector<nlohmann::json> lines;
    std::istringstream in(ReadFile(dir.File("dead.jsonl")));
    for (std::string line; std::getline(in, line);) {
      lines.push_back(nlohmann::json::parse(line));
    }
    return lines;
  }
};

// Complete, unique = N, nothing missing, every item written once. Replays
// may add duplicates (counted, never written) unless `no_duplicates`.
inline void ExpectCompleteExactly(const nlohmann::json& report, int n,
                                  bool no_duplicates = true) {
  EXPECT_EQ(report["complete"], true) << report.dump(2);
  EXPECT_EQ(report["expected"], n);
  EXPECT_EQ(report["unique"], n);
  EXPECT_EQ(report["missing"], 0);
  if (no_duplicates) {
    EXPECT_EQ(report["duplicates"], 0);
  }
  EXPECT_EQ(report["received"].get<int>(), n + report["duplicates"].get<int>());
  EXPECT_EQ(report["written"], n);
}

// Waits until `worker` logs counters showing it has processed items (it
// logs them every 100 ms with --stats-interval 0.1): proof it is mid-stream.
inline bool WaitUntilBusy(Process& worker, const std::string& counter) {
  return worker.WaitForOutput(
      [&](const std::string&, const std::string& err) {
        size_t pos = err.rfind("\"" + counter + "\":");
        return pos != std::string::npos &&
               err.compare(pos + counter.size() + 3, 2, "0,") != 0;
      },
      std::chrono::seconds(60));
}

// Waits until the last counters `process` logged show `counter` >= `value`
// (start it with --stats-interval 0.1). False if it exits first.
inline bool WaitUntilCounterAtLeast(Process& process, const std::string& counter,
                                    uint64_t value,
                                    std::chrono::milliseconds timeout =
                                        std::chrono::seconds(60)) {
  return process.WaitForOutput(
      [&](const std::string&, const std::string& err) {
        size_t pos = err.rfind("counters {");
        if (pos == std::string::npos) return false;
        size_t start = pos + 9;
        auto counters = nlohmann::json::parse(
            err.substr(start, err.find('\n', start) - start), nullptr, false);
        return counters.is_object() && counters.value(counter, uint64_t{0}) >= value;
      },
      timeout);
}

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_INTEGRATION_JOB_H_
