// sluice-bench: end-to-end throughput of the zero-latency token-then-result
// job, next to a raw ZeroMQ yardstick measured in the same run.
//
//   yardstick: PUSH -> PULL, 100-byte messages, one tcp hop on loopback,
//              sender and receiver in separate threads and contexts.
//   pipeline:  sluice-producer -> sluice-stage (token, 1 thread, 0 ms) ->
//              sluice-stage (result, 1 thread, 0 ms) -> sluice-sink, as
//              separate processes on 127.0.0.1 (three tcp hops).
//
// Both move N items; the ratio pipeline/yardstick is the figure to quote
// (absolute numbers vary with the machine and its load).
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "tests/harness/process.h"

namespace sluice {
namespace {

using Clock = std::chrono::steady_clock;
using testing::BinaryPath;
using testing::Process;
using testing::TempDir;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Messages per second through one PUSH -> PULL tcp hop.
double RawZmqYardstick(uint64_t n) {
  zmq::context_t rx_context(1), tx_context(1);
  zmq::socket_t pull(rx_context, zmq::socket_type::pull);
  pull.bind("tcp://127.0.0.1:*");
  std::string address = pull.get(zmq::sockopt::last_endpoint);
  Clock::time_point start;
  std::thread sender([&] {
    zmq::socket_t push(tx_context, zmq::socket_type::push);
    push.connect(address);
    std::string payload(100, 'x');
    for (uint64_t i = 0; i < n; ++i) {
      zmq::message_t m(payload.data(), payload.size());
      (void)push.send(m, zmq::send_flags::none);
    }
  });
  zmq::message_t m;
  (void)pull.recv(m);
  start = Clock::now();
  for (uint64_t i = 1; i < n; ++i) (void)pull.recv(m);
  double elapsed = Seconds(Clock::now() - start);
  sender.join();
  return (n - 1) / elapsed;
}

struct PipelineRun {
  double items_per_s = 0;  // The sink's figure: first item to completion.
  bool complete = false;
};

PipelineRun Pipeline(uint64_t n, bool acks) {
  TempDir dir;
  auto start = [](std::vector<std::string> args) {
    return std::make_unique<Process>(std::move(args));
  };
  auto sink = start({BinaryPath("sluice-sink"), "--in", "@tcp://127.0.0.1:*",
                     "--report", dir.File("report.json"), "--progress", "off",
                     "--acks", acks ? "@tcp://127.0.0.1:*" : "off",
                     "--idle-timeout", "60"});
  auto sink_ready = sink->WaitReady();
  std::string sink_in = sink_ready["in"];
  auto result = start({BinaryPath("sluice-stage"), "--op", "result", "--threads",
                       "1", "--latency-ms", "0", "--in", "@tcp://127.0.0.1:*",
                       "--out", ">" + sink_in});
  std::string result_in = result->WaitReady()["in"];
  auto producer = start({BinaryPath("sluice-producer"), "--out",
                         "@tcp://127.0.0.1:*", "--count", std::to_string(n),
                         "--peers", "1", "--acks",
                         acks ? ">" + sink_ready["acks"] : "off"});
  std::string producer_out = producer->WaitReady()["out"];
  auto token = start({BinaryPath("sluice-stage"), "--op", "token", "--threads",
                      "1", "--latency-ms", "0", "--in", ">" + producer_out,
                      "--out", ">" + result_in});
  PipelineRun run;
  auto code = sink->Wait(std::chrono::minutes(5));
  producer->Wait(std::chrono::minutes(1));
  token->Signal(SIGTERM);
  result->Signal(SIGTERM);
  token->Wait(std::chrono::minutes(1));
  result->Wait(std::chrono::minutes(1));
  auto report = nlohmann::json::parse(testing::ReadFile(dir.File("report.json")),
                                      nullptr, false);
  if (code != 0 || report.is_discarded()) {
    std::fprintf(stderr, "pipeline run failed (sink exit %d): %s\n",
                 code.value_or(-1), sink->err().c_str());
    return run;
  }
  run.complete = report["complete"].get<bool>() &&
                 report["unique"].get<uint64_t>() == n;
  run.items_per_s = report["items_per_s"].get<double>();
  return run;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  if (n < 2 || runs < 1) {
    std::fprintf(stderr, "usage: sluice-bench [ITEMS [RUNS]]\n");
    return 64;
  }
  std::printf("sluice-bench: %llu items, %d runs each, interleaved; medians\n",
              static_cast<unsigned long long>(n), runs);
  std::vector<double> raw, acked, fire;
  for (int r = 0; r < runs; ++r) {
    raw.push_back(RawZmqYardstick(n));
    for (bool acks : {true, false}) {
      PipelineRun run = Pipeline(n, acks);
      if (!run.complete) {
        std::fprintf(stderr, "run %d: the pipeline did not complete exactly\n", r);
        return 70;
      }
      (acks ? acked : fire).push_back(run.items_per_s);
    }
    std::printf("  run %d: raw zmq %.0f msg/s, pipeline %.0f items/s with acks, "
                "%.0f with --acks off\n",
                r + 1, raw.back(), acked.back(), fire.back());
  }
  double raw_m = Median(raw), acked_m = Median(acked), fire_m = Median(fire);
  std::printf("raw ZeroMQ PUSH->PULL, 100 B, 1 tcp hop     : %12.0f msg/s\n", raw_m);
  std::printf("token-then-result, 0 ms, 1 worker per stage (3 tcp hops, 4 processes):\n");
  std::printf("  with acks (at-least-once, the default)    : %12.0f items/s  ratio %.2f\n",
              acked_m, acked_m / raw_m);
  std::printf("  --acks off (fire-and-forget)              : %12.0f items/s  ratio %.2f\n",
              fire_m, fire_m / raw_m);
  return 0;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) { return sluice::Main(argc, argv); }
