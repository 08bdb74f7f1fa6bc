// sluice-bench: end-to-end throughput and CPU of the zero-latency
// token-then-result job, next to a raw ZeroMQ yardstick measured in the same
// run, and a line of history per run.
//
//   yardstick: a raw relay chain of four processes, as the pipeline has:
//              source -> relay -> relay -> sink, PUSH/PULL, 100-byte
//              messages, one message per item, on 127.0.0.1 (this binary
//              run with --role).
//   pipeline:  sluice-producer -> sluice-stage (token, 0 ms) -> sluice-stage
//              (result, 0 ms) -> sluice-sink, separate processes on
//              127.0.0.1, acks on and off, with the default thread counts
//              (token 10, result 5) and with one thread per op.
//
// Both move N items. The figures to quote are the ratios pipeline/yardstick
// (absolute numbers vary with the machine and its load) and the CPU per
// item: user + system time of all four processes (getrusage of the reaped
// children) divided by N. Each run appends a line to
// bench/results/history.tsv (see --history).
//
// Also (each can be turned off): low-load latency against three raw hops
// (--latency), an API-bound worker — one token stage of 10 ms calls on its
// default threads and on one loop thread with --concurrency 1000 (--async) —
// the http op against a local API and the classic job with stage 1 batched
// or not (--api), the scaling table of latency-bound workers (--scaling) and
// the peak memory of each process of the job at 10^5 and 10^7 items and
// under a slow sink (--memory), and a cheap op whose 1% transient failures
// wait 500 ms for their retry against the same job without failures
// (--retry), and latency-bound workers at capacity: 1 and 2 workers of 2
// threads at 1 ms per item, with the sink's default ack batching, against
// their capacity (--flow).
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
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

// CPU seconds (user + system) of the children reaped so far.
double ChildrenCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_CHILDREN, &usage);
  auto secs = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return secs(usage.ru_utime) + secs(usage.ru_stime);
}

// One process of the raw relay chain (--role source|relay|sink). Each binds
// its output (or, the sink, its input) on an ephemeral port and prints
// READY; the next connects to it.
// With `interval_us` > 0 (the latency run) the source sends one message per
// interval, each starting with its send time (steady clock, which Linux
// shares between processes), and the sink prints the median latency.
int RunRole(const std::string& role, const std::string& upstream, uint64_t n,
            int64_t interval_us) {
  zmq::context_t context(1);
  if (role == "source") {
    zmq::socket_t push(context, zmq::socket_type::push);
    push.bind("tcp://127.0.0.1:*");
    std::printf("READY out=%s\n", push.get(zmq::sockopt::last_endpoint).c_str());
    std::fflush(stdout);
    std::string payload(100, 'x');
    if (interval_us > 0) {  // Wait for the chain to connect: a first message.
      zmq::message_t m(payload.data(), payload.size());
      (void)push.send(m, zmq::send_flags::none);
    }
    auto next = Clock::now();
    for (uint64_t i = 0; i < n; ++i) {
      if (interval_us > 0) {
        next += std::chrono::microseconds(interval_us);
        std::this_thread::sleep_until(next);
        const int64_t sent = Clock::now().time_since_epoch().count();
        std::memcpy(payload.data(), &sent, sizeof(sent));
      }
      zmq::message_t m(payload.data(), payload.size());
      (void)push.send(m, zmq::send_flags::none);
    }
    return 0;  // The context's close flushes (infinite linger).
  }
  zmq::socket_t pull(context, zmq::socket_type::pull);
  if (role == "relay") {
    zmq::socket_t push(context, zmq::socket_type::push);
    push.bind("tcp://127.0.0.1:*");
    std::printf("READY out=%s\n", push.get(zmq::sockopt::last_endpoint).c_str());
    std::fflush(stdout);
    pull.connect(upstream);
    zmq::message_t m;
    for (uint64_t i = 0; i < n; ++i) {
      (void)pull.recv(m);
      (void)push.send(m, zmq::send_flags::none);
    }
    if (interval_us > 0) {  // The first, connecting message, and then n.
      (void)pull.recv(m);
      (void)push.send(m, zmq::send_flags::none);
    }
    return 0;
  }
  pull.connect(upstream);
  std::printf("READY in=%s\n", upstream.c_str());
  std::fflush(stdout);
  zmq::message_t m;
  (void)pull.recv(m);
  if (interval_us > 0) {
    std::vector<double> latency_us;
    for (uint64_t i = 0; i < n; ++i) {
      (void)pull.recv(m);
      int64_t sent = 0;
      std::memcpy(&sent, m.data(), sizeof(sent));
      latency_us.push_back((Clock::now().time_since_epoch().count() - sent) / 1e3);
    }
    std::sort(latency_us.begin(), latency_us.end());
    std::printf("P50 %.1f\n", latency_us[latency_us.size() / 2]);
    return 0;
  }
  auto start = Clock::now();
  for (uint64_t i = 1; i < n; ++i) (void)pull.recv(m);
  std::printf("RATE %.0f\n", (n - 1) / Seconds(Clock::now() - start));
  return 0;
}

struct Figures {
  double items_per_s = 0;
  double cpu_us_per_item = 0;
  bool ok = false;
  // Of the producer, token, result and sink (pipeline runs), in KiB: peak
  // RSS (the kernel's, exact), and the largest anonymous part seen by
  // sampling every 5 ms (heap, stacks, buffers: what grows with the data,
  // without the shared libraries' pages).
  std::array<long, 4> peak_rss_kib{}, peak_anon_kib{};
};

// Runs the raw relay chain (four processes of this binary: source -> relay
// -> relay -> sink) and returns what its sink printed; nullopt if a process
// failed. `interval_us` > 0 paces the source (the latency run).
std::optional<std::string> RunRawChain(uint64_t n, int64_t interval_us) {
  const std::string self = "/proc/self/exe";
  auto role = [&](const std::string& name, const std::string& upstream) {
    return std::make_unique<Process>(std::vector<std::string>{
        self, "--role", name, "--upstream", upstream, "--items", std::to_string(n),
        "--interval-us", std::to_string(interval_us)});
  };
  auto source = role("source", "");
  std::string a = source->WaitReady()["out"];
  auto relay1 = role("relay", a);
  std::string b = relay1->WaitReady()["out"];
  auto relay2 = role("relay", b);
  std::string c = relay2->WaitReady()["out"];
  auto sink = role("sink", c);
  bool ok = sink->Wait(std::chrono::minutes(5)) == 0;
  for (auto* p : {source.get(), relay1.get(), relay2.get()}) {
    ok = p->Wait(std::chrono::minutes(1)) == 0 && ok;
  }
  if (!ok) return std::nullopt;
  return sink->out();
}

// The value after `label` in `out`, or -1.
double Printed(const std::optional<std::string>& out, const std::string& label) {
  const size_t at = out ? out->find(label) : std::string::npos;
  return at == std::string::npos ? -1 : std::strtod(out->c_str() + at + label.size(), nullptr);
}

// The raw relay chain at full speed: the sink's rate, first message to
// last; CPU of all four.
Figures RawRelayChain(uint64_t n) {
  const double cpu_before = ChildrenCpuSeconds();
  const double rate = Printed(RunRawChain(n, 0), "RATE ");
  if (rate < 0) return Figures{};
  Figures f;
  f.ok = true;
  f.items_per_s = rate;
  f.cpu_us_per_item = (ChildrenCpuSeconds() - cpu_before) * 1e6 / n;
  return f;
}

// producer -> token -> result -> sink on 127.0.0.1, ops of 0 ms. Start()
// brings up the sink and the result stage; the caller starts the producer
// (its input differs per run), then StartToken(); Finish() waits for the
// sink and the producer, stops the stages and returns the sink's report
// (discarded, with the reason on stderr, unless it holds all n items).
struct Chain {
  TempDir dir;
  std::unique_ptr<Process> sink, result, producer, token;
  std::map<std::string, std::string> sink_ready;
  std::string result_in;
  std::vector<std::string> threads;  // Extra stage flags.
  std::vector<std::string> curve;    // CURVE flags for all four, or none.
  std::vector<std::string> sink_flags;  // Extra sink flags.

  static std::unique_ptr<Process> Run(std::vector<std::string> args,
                                      const std::vector<std::string>& more = {}) {
    args.insert(args.end(), more.begin(), more.end());
    return std::make_unique<Process>(std::move(args));
  }
  void Start(bool acks, std::vector<std::string> stage_flags) {
    threads = std::move(stage_flags);
    std::vector<std::string> more = curve;
    more.insert(more.end(), sink_flags.begin(), sink_flags.end());
    sink = Run({BinaryPath("sluice-sink"), "--in", "@tcp://127.0.0.1:*", "--report",
                dir.File("report.json"), "--progress", "off", "--state", "off",
                "--acks", acks ? "@tcp://127.0.0.1:*" : "off", "--idle-timeout", "60"},
               more);
    sink_ready = sink->WaitReady();
    std::vector<std::string> args = {BinaryPath("sluice-stage"), "--op", "result",
                                     "--latency-ms", "0", "--in", "@tcp://127.0.0.1:*",
                                     "--out", ">" + sink_ready["in"]};
    args.insert(args.end(), threads.begin(), threads.end());
    result = Run(args, curve);
    result_in = result->WaitReady()["in"];
  }
  // The producer's --acks value.
  std::string Acks() { return sink_ready.count("acks") ? ">" + sink_ready["acks"] : "off"; }
  void StartToken(const std::string& producer_out) {
    std::vector<std::string> args = {BinaryPath("sluice-stage"), "--op", "token",
                                     "--latency-ms", "0", "--in", ">" + producer_out,
                                     "--out", ">" + result_in};
    args.insert(args.end(), threads.begin(), threads.end());
    token = Run(args, curve);
  }
  nlohmann::json Finish(uint64_t n) {
    const auto code = sink->Wait(std::chrono::minutes(5));
    producer->Wait(std::chrono::minutes(1));
    token->Signal(SIGTERM);
    result->Signal(SIGTERM);
    token->Wait(std::chrono::minutes(1));
    result->Wait(std::chrono::minutes(1));
    auto report = nlohmann::json::parse(testing::ReadFile(dir.File("report.json")),
                                        nullptr, false);
    if (code != 0 || report.is_discarded() || !report["complete"].get<bool>() ||
        report["unique"].get<uint64_t>() != n) {
      std::fprintf(stderr, "pipeline run failed (sink exit %d): %s%s\n",
                   code.value_or(-1), sink->err().c_str(), producer->err().c_str());
      return nlohmann::json::value_t::discarded;
    }
    return report;
  }
};

// CURVE flags for every process of a chain: one key pair (sluice-keygen)
// that every process holds and the allow-list lists. Empty if keygen fails.
std::vector<std::string> CurveFlags(TempDir& dir) {
  Process keygen({BinaryPath("sluice-keygen"), dir.File("cluster")});
  if (keygen.Wait(std::chrono::seconds(30)) != 0) return {};
  std::filesystem::create_directory(dir.File("allow"));
  std::filesystem::copy_file(dir.File("cluster.pub"), dir.File("allow/cluster.pub"));
  return {"--curve-secret", dir.File("cluster.key"), "--curve-server",
          dir.File("cluster.pub"), "--curve-allow", dir.File("allow")};
}

// The pipeline with acks on or off, with the default thread counts or one
// thread per op, with CURVE (`curve`: its flags) or plain. items/s is the
// sink's figure (first item to completion).
Figures Pipeline(uint64_t n, bool acks, bool default_threads,
                 const std::vector<std::string>& curve = {},
                 const std::vector<std::string>& sink_flags = {}) {
  const double cpu_before = ChildrenCpuSeconds();
  Chain chain;
  chain.curve = curve;
  chain.sink_flags = sink_flags;
  chain.Start(acks, default_threads ? std::vector<std::string>{}
                                    : std::vector<std::string>{"--threads", "1"});
  chain.producer = Chain::Run({BinaryPath("sluice-producer"), "--out", "@tcp://127.0.0.1:*",
                               "--count", std::to_string(n), "--peers", "1", "--acks",
                               chain.Acks()},
                              curve);
  chain.StartToken(chain.producer->WaitReady()["out"]);
  std::atomic<bool> finished{false};
  Figures run;
  std::thread sampler([&] {
    const Process* processes[] = {chain.producer.get(), chain.token.get(),
                                  chain.result.get(), chain.sink.get()};
    while (!finished) {
      for (size_t i = 0; i < 4; ++i) {
        run.peak_anon_kib[i] = std::max(run.peak_anon_kib[i], processes[i]->AnonKib());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  const nlohmann::json report = chain.Finish(n);
  finished = true;
  sampler.join();
  if (report.is_discarded()) return run;
  run.ok = true;
  run.items_per_s = report["items_per_s"].get<double>();
  run.cpu_us_per_item = (ChildrenCpuSeconds() - cpu_before) * 1e6 / n;
  run.peak_rss_kib = {chain.producer->PeakRssKib(), chain.token->PeakRssKib(),
                      chain.result->PeakRssKib(), chain.sink->PeakRssKib()};
  return run;
}

// Memory: peak RSS of each process of the job (acks on, default threads) at
// a small and a 100 times larger N, and with a sink held to `slow_rate`
// items/s. Prints the table; returns the largest peak of the large run and
// of the slow one (KiB), or nullopt if a run failed.
std::optional<std::pair<long, long>> MemoryTable(uint64_t small_n, uint64_t slow_rate) {
  struct Row {
    std::string name;
    Figures figures;
  };
  const uint64_t slow_n = slow_rate * 10;  // About 10 s.
  std::vector<Row> rows = {
      {std::to_string(small_n) + " items", Pipeline(small_n, true, true)},
      {std::to_string(small_n * 100) + " items", Pipeline(small_n * 100, true, true)},
      {std::to_string(slow_n) + " items, sink --max-rate " + std::to_string(slow_rate),
       Pipeline(slow_n, true, true, {}, {"--max-rate", std::to_string(slow_rate)})},
  };
  std::printf("memory: peak RSS / of which anonymous (MiB) of each process, acks on, "
              "default threads (goal: flat in N, bounded under a slow sink):\n"
              "  %-38s %11s %11s %11s %11s\n", "", "producer", "token", "result", "sink");
  long largest[3] = {0, 0, 0};
  for (size_t i = 0; i < rows.size(); ++i) {
    const Figures& f = rows[i].figures;
    if (!f.ok) {
      std::fprintf(stderr, "memory run (%s) failed\n", rows[i].name.c_str());
      return std::nullopt;
    }
    std::printf("  %-38s", rows[i].name.c_str());
    for (size_t p = 0; p < 4; ++p) {
      std::printf(" %5.1f / %3.1f", f.peak_rss_kib[p] / 1024.0, f.peak_anon_kib[p] / 1024.0);
      largest[i] = std::max(largest[i], f.peak_rss_kib[p]);
    }
    std::printf("\n");
  }
  std::printf("  largest process: %.1f MiB at %llu items, %.1f MiB at 100x (x%.2f), "
              "%.1f MiB under the slow sink\n",
              largest[0] / 1024.0, static_cast<unsigned long long>(small_n),
              largest[1] / 1024.0, static_cast<double>(largest[1]) / largest[0],
              largest[2] / 1024.0);
  return std::make_pair(largest[1], largest[2]);
}

// Low-load latency: one item every `interval_us`, n items, three tcp hops.
// The raw chain's median from the send times its messages carry.
double RawChainLatencyUs(uint64_t n, int64_t interval_us) {
  return Printed(RunRawChain(n, interval_us), "P50 ");
}

// The same through producer -> token -> result -> sink (0 ms ops, acks on,
// default threads): the producer reads one line per interval from a FIFO;
// the sink's report gives the median, produced to sunk.
double PipelineLatencyUs(uint64_t n, int64_t interval_us) {
  Chain chain;
  const std::string fifo = chain.dir.File("input");
  if (mkfifo(fifo.c_str(), 0600) != 0) return -1;
  chain.Start(/*acks=*/true, {});
  chain.producer = Chain::Run({BinaryPath("sluice-producer"), "--out", "@tcp://127.0.0.1:*",
                               "--input", fifo, "--peers", "1", "--acks", chain.Acks()});
  // Close-on-exec: a child holding the write end would keep EOF away.
  std::FILE* input = std::fopen(fifo.c_str(), "we");  // Waits for the reader.
  if (input == nullptr) return -1;
  chain.StartToken(chain.producer->WaitReady()["out"]);
  chain.token->WaitReady();
  auto next = Clock::now() + std::chrono::milliseconds(200);  // Connections settle.
  for (uint64_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(next);
    next += std::chrono::microseconds(interval_us);
    std::fprintf(input, "%llu\n", static_cast<unsigned long long>(i));
    std::fflush(input);
  }
  std::fclose(input);
  const nlohmann::json report = chain.Finish(n);
  return report.is_discarded() ? -1 : report["latency_ms"]["p50"].get<double>() * 1000;
}

// One row of the scaling table: producer -> k token workers (one process
// each, --threads 2 --latency-ms 10: ~400 items/s apiece, bound by waiting,
// not CPU) -> sink, N = 1200 k items, acks on.
struct ScalingRow {
  int workers = 0;
  double items_per_s = 0, elapsed_s = 0, efficiency = 0;
  uint64_t duplicates = 0;
  bool ok = false;
};

// A sink (acks on, its report in `dir`) and a producer of n items for
// `peers` workers, both up; the workers between them are the caller's.
struct Ends {
  std::unique_ptr<Process> sink, producer;
  std::string sink_in, producer_out;
};
// With `acks` false, fire-and-forget: the sink stops on the stream's
// completion (or after 5 s of silence).
Ends StartEnds(TempDir& dir, uint64_t n, int peers, bool acks = true) {
  Ends ends;
  ends.sink = std::make_unique<Process>(std::vector<std::string>{
      BinaryPath("sluice-sink"), "--in", "@tcp://127.0.0.1:*", "--acks",
      acks ? "@tcp://127.0.0.1:*" : "off", "--report", dir.File("report.json"),
      "--progress", "off", "--state", "off", "--idle-timeout", acks ? "120" : "5"});
  auto sink_ready = ends.sink->WaitReady();
  ends.sink_in = sink_ready["in"];
  ends.producer = std::make_unique<Process>(std::vector<std::string>{
      BinaryPath("sluice-producer"), "--out", "@tcp://127.0.0.1:*", "--count",
      std::to_string(n), "--peers", std::to_string(peers), "--acks",
      acks ? ">" + sink_ready["acks"] : "off"});
  ends.producer_out = ends.producer->WaitReady()["out"];
  return ends;
}

ScalingRow Scale(int workers) {
  TempDir dir;
  const uint64_t n = 1200 * static_cast<uint64_t>(workers);
  ScalingRow row;
  row.workers = workers;
  Ends ends = StartEnds(dir, n, workers);
  auto& sink = ends.sink;
  auto& producer = ends.producer;
  const std::string out = ends.producer_out;
  std::vector<std::unique_ptr<Process>> stage;
  for (int i = 0; i < workers; ++i) {
    stage.push_back(std::make_unique<Process>(std::vector<std::string>{
        BinaryPath("sluice-stage"), "--op", "token", "--threads", "2",
        "--latency-ms", "10", "--in", ">" + out, "--out", ">" + ends.sink_in}));
  }
  const bool done = sink->Wait(std::chrono::minutes(5)) == 0;
  producer->Wait(std::chrono::minutes(1));
  for (auto& p : stage) p->Signal(SIGTERM);
  for (auto& p : stage) p->Wait(std::chrono::minutes(1));
  auto report = nlohmann::json::parse(testing::ReadFile(dir.File("report.json")),
                                      nullptr, false);
  if (!done || report.is_discarded() || report["unique"].get<uint64_t>() != n) {
    return row;
  }
  row.ok = true;
  row.items_per_s = report["items_per_s"].get<double>();
  row.elapsed_s = report["elapsed_s"].get<double>();
  row.efficiency = row.items_per_s / (400.0 * workers);
  row.duplicates = report["duplicates"].get<uint64_t>();
  return row;
}

// Peak resident memory of a running process, in KiB (VmHWM); 0 if unknown.
uint64_t PeakRssKib(pid_t pid) {
  const std::string status =
      testing::ReadFile("/proc/" + std::to_string(pid) + "/status");
  const size_t at = status.find("VmHWM:");
  return at == std::string::npos ? 0 : std::strtoull(status.c_str() + at + 6, nullptr, 10);
}

// producer -> one worker per element of `stages` (sluice-stage arguments
// without --in/--out; each after the first binds its input for the one
// before) -> sink, n items, acks on. The sink's items/s (0 if the run was
// not exact), the first worker's peak memory and last counters.
struct WorkerRun {
  double items_per_s = 0;
  uint64_t peak_rss_kib = 0;
  nlohmann::json counters;
};
WorkerRun RunWorkers(uint64_t n, const std::vector<std::vector<std::string>>& stages) {
  TempDir dir;
  WorkerRun run;
  Ends ends = StartEnds(dir, n, 1);
  std::vector<std::unique_ptr<Process>> workers(stages.size());
  std::string next_in = ends.sink_in;
  for (size_t i = stages.size(); i-- > 0;) {
    std::vector<std::string> args = {BinaryPath("sluice-stage"), "--in",
                                     i == 0 ? ">" + ends.producer_out : "@tcp://127.0.0.1:*",
                                     "--out", ">" + next_in};
    args.insert(args.end(), stages[i].begin(), stages[i].end());
    workers[i] = std::make_unique<Process>(args);
    if (i > 0) next_in = workers[i]->WaitReady()["in"];
  }
  const bool done = ends.sink->Wait(std::chrono::minutes(5)) == 0;
  ends.producer->Wait(std::chrono::minutes(1));
  run.peak_rss_kib = PeakRssKib(workers[0]->pid());
  for (auto& w : workers) w->Signal(SIGTERM);
  for (auto& w : workers) w->Wait(std::chrono::minutes(1));
  run.counters = workers[0]->LastCounters();
  auto report = nlohmann::json::parse(testing::ReadFile(dir.File("report.json")),
                                      nullptr, false);
  if (done && !report.is_discarded() && report["unique"].get<uint64_t>() == n) {
    run.items_per_s = report["items_per_s"].get<double>();
  }
  return run;
}

// An API-bound stage: one token worker (`token_flags`, 10 ms calls).
WorkerRun OneTokenWorker(uint64_t n, const std::vector<std::string>& token_flags) {
  std::vector<std::string> args = {"--op", "token", "--latency-ms", "10"};
  args.insert(args.end(), token_flags.begin(), token_flags.end());
  return RunWorkers(n, {args});
}

// sluice-test-api on an ephemeral port, answering after up to `latency_ms`.
struct TestApi {
  explicit TestApi(int latency_ms)
      : server({BinaryPath("sluice-test-api"), "--latency-ms", std::to_string(latency_ms)}),
        base("http://127.0.0.1:" + server.WaitReady()["port"]) {}
  Process server;
  std::string base;
};

// Prints the table, writes it as TSV next to the history and, if gnuplot is
// there, draws it as a PNG: items/s and elapsed time against workers.
bool ScalingTable(const std::string& results_dir) {
  std::printf("scaling: producer -> k token workers (--threads 2 --latency-ms 10, "
              "ideal 400 items/s each) -> sink, N = 1200 k, acks on\n");
  std::printf("  %8s %12s %10s %11s %11s\n", "workers", "items/s", "elapsed s",
              "efficiency", "duplicates");
  std::vector<ScalingRow> rows;
  for (int k : {1, 2, 5, 10, 20}) {
    ScalingRow row = Scale(k);
    if (!row.ok) {
      std::fprintf(stderr, "scaling run with %d workers did not complete exactly\n", k);
      return false;
    }
    std::printf("  %8d %12.0f %10.2f %11.2f %11llu\n", row.workers, row.items_per_s,
                row.elapsed_s, row.efficiency,
                static_cast<unsigned long long>(row.duplicates));
    rows.push_back(row);
  }
  if (results_dir.empty()) return true;
  const std::string tsv = results_dir + "/scaling.tsv";
  {
    std::ofstream out(tsv);
    out << "workers\titems_per_s\telapsed_s\tefficiency\tduplicates\n";
    for (const ScalingRow& r : rows) {
      out << r.workers << '\t' << r.items_per_s << '\t' << r.elapsed_s << '\t'
          << r.efficiency << '\t' << r.duplicates << '\n';
    }
  }
  const std::string png = results_dir + "/scaling.png";
  const std::string plot = results_dir + "/scaling.gp";
  {
    std::ofstream gp(plot);
    gp << "set terminal pngcairo size 800,480\n"
       << "set output 'scaling.png'\n"
       << "set title 'token stage scaled out: producer -> k workers -> sink'\n"
       << "set xlabel 'workers (one process each, 2 threads, 10 ms per item)'\n"
       << "set ylabel 'items/s'\nset y2label 'elapsed s'\nset y2tics\n"
       << "set ytics nomirror\nset yrange [0:*]\nset y2range [0:*]\n"
       << "set key left top\nset grid\n"
       << "plot 'scaling.tsv' using 1:2 with linespoints title 'items/s', \\\n"
       << "  '' using 1:(400*$1) with lines dashtype 2 title 'ideal (400 per worker)', \\\n"
       << "  '' using 1:3 axes x1y2 with linespoints title 'elapsed s'\n";
  }
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0 &&
      std::system(("cd '" + results_dir + "' && gnuplot scaling.gp").c_str()) == 0) {
    std::printf("wrote %s, %s and %s\n", tsv.c_str(), plot.c_str(), png.c_str());
  } else {
    std::remove(png.c_str());
    std::printf("wrote %s and %s (no gnuplot: no PNG)\n", tsv.c_str(), plot.c_str());
  }
  return true;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Retries (issue 21, part 2): producer -> one stage running a cheap op
// (pass, 0 ms) -> sink, n items, acks on, once with 1% of the items failing
// transiently once (--pass-fail-percent 1: seq % 100 == 0) and a 500 ms
// backoff, once without failures. A retry costs its own item its backoff
// and nothing else, so the figure is the throughput of the other 99%: the
// sink's unique items per second from its first counters line showing an
// item to the first showing 99% of them (counters every 10 ms, read from
// its log). The goal: within 10% of the run without failures.
//
// The sink's "HH:MM:SS.mmm" log time of a line, in seconds of the day.
double LogSeconds(const std::string& line) {
  const size_t t = line.find('T');
  if (t == std::string::npos || line.size() < t + 13) return -1;
  return std::atof(line.substr(t + 1, 2).c_str()) * 3600 +
         std::atof(line.substr(t + 4, 2).c_str()) * 60 +
         std::atof(line.substr(t + 7, 6).c_str());
}

// Items per second from the sink's first counters line with an item to the
// first with at least `share` of n; -1 if its log has no such lines.
double RateUpTo(const std::string& sink_log, uint64_t n, double share) {
  double t0 = -1, c0 = 0;
  std::istringstream in(sink_log);
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find("counters {");
    if (at == std::string::npos) continue;
    auto counters = nlohmann::json::parse(line.substr(at + 9), nullptr, false);
    if (!counters.is_object()) continue;
    const double items = counters.value("items_new", 0.0);
    const double t = LogSeconds(line);
    if (items <= 0 || t < 0) continue;
    if (t0 < 0) {
      t0 = t;
      c0 = items;
    } else if (items >= share * static_cast<double>(n) && t > t0) {
      return (items - c0) / (t - t0);
    }
  }
  return -1;
}

// One run: the rate of the first 99% of the items (see above; 80% with
// --acks off, see RetryBench), or -1.
double RetryRun(uint64_t n, bool failures, bool acks) {
  TempDir dir;
  Process sink({BinaryPath("sluice-sink"), "--in", "@tcp://127.0.0.1:*", "--acks",
                acks ? "@tcp://127.0.0.1:*" : "off", "--report", dir.File("report.json"), "--progress",
                "off", "--state", "off", "--idle-timeout", acks ? "120" : "5",
                "--stats-interval", "0.01"});
  auto sink_ready = sink.WaitReady();
  Process producer({BinaryPath("sluice-producer"), "--out", "@tcp://127.0.0.1:*",
                    "--count", std::to_string(n), "--peers", "1", "--acks",
                    acks ? ">" + sink_ready["acks"] : "off"});
  const std::string producer_out = producer.WaitReady()["out"];
  std::vector<std::string> stage_args = {
      BinaryPath("sluice-stage"), "--op", "pass", "--in", ">" + producer_out, "--out",
      ">" + sink_ready["in"], "--retry-backoff-ms", "500", "--drain-timeout", "1"};
  if (failures) stage_args.insert(stage_args.end(), {"--pass-fail-percent", "1"});
  Process stage(stage_args);
  const bool done = sink.Wait(std::chrono::minutes(5)) == 0;
  producer.Wait(std::chrono::minutes(1));
  stage.Signal(SIGTERM);
  stage.Wait(std::chrono::minutes(1));
  auto report = nlohmann::json::parse(testing::ReadFile(dir.File("report.json")),
                                      nullptr, false);
  if (!acks) return RateUpTo(sink.err(), n, 0.8);
  if (!done || report.is_discarded() || report["unique"].get<uint64_t>() != n ||
      report["failed"].get<uint64_t>() != 0) {
    std::fprintf(stderr, "retry run (failures %s) did not complete exactly: %s\n",
                 failures ? "on" : "off", sink.err().c_str());
    return -1;
  }
  return RateUpTo(sink.err(), n, 0.99);
}

// Prints the section; false if a run failed. With acks on, the producer's
// window spans seqs (as TCP's does) and its flow limit grows by what acks
// release: an item waiting 500 ms for its retry leaves a hole that holds
// the producer to about its limit per backoff, whatever the stage does.
// With --acks off there is no window, and the figure is the stage's own
// cost of the retries; it is taken over the first 80% of the items, and
// the run need not complete (--acks off can lose the tail of a stream when
// the producer exits first: issue 21, part 5).
bool RetryBench(uint64_t n, int runs) {
  std::printf("retries: producer -> pass (0 ms) -> sink, %llu items; 1%% of items fail "
              "transiently once, 500 ms backoff, against no failures\n"
              "  (the other 99%%'s items/s; goal: ratio >= 0.90)\n",
              static_cast<unsigned long long>(n));
  for (bool acks : {false, true}) {
    std::vector<double> clean, flaky, ratios;
    for (int r = 0; r < runs; ++r) {
      clean.push_back(RetryRun(n, false, acks));
      flaky.push_back(RetryRun(n, true, acks));
      if (clean.back() <= 0 || flaky.back() <= 0) return false;
      ratios.push_back(flaky.back() / clean.back());
    }
    std::printf("  %-9s: no failures %10.0f items/s, 1%% retried %10.0f items/s;"
                " ratio %.2f (runs: %.2f to %.2f)\n",
                acks ? "acks on" : "acks off", Median(clean), Median(flaky),
                Median(ratios), *std::min_element(ratios.begin(), ratios.end()),
                *std::max_element(ratios.begin(), ratios.end()));
  }
  return true;
}

// Items per second of `workers` token workers of 2 threads whose op takes
// 1 ms on average (--latency-ms 2: uniform in [0, 2)), acks on with the
// sink's default ack interval; 0 if the job did not complete exactly.
double FlowRun(int workers, uint64_t n, bool acks) {
  TempDir dir;
  Ends ends = StartEnds(dir, n, workers, acks);
  std::vector<std::unique_ptr<Process>> stage;
  for (int i = 0; i < workers; ++i) {
    stage.push_back(std::make_unique<Process>(std::vector<std::string>{
        BinaryPath("sluice-stage"), "--op", "token", "--threads", "2",
        "--latency-ms", "2", "--in", ">" + ends.producer_out, "--out",
        ">" + ends.sink_in}));
  }
  const bool done = ends.sink->Wait(std::chrono::minutes(5)) == 0;
  ends.producer->Wait(std::chrono::minutes(1));
  for (auto& p : stage) p->Signal(SIGTERM);
  for (auto& p : stage) p->Wait(std::chrono::minutes(1));
  auto report = nlohmann::json::parse(testing::ReadFile(dir.File("report.json")),
                                      nullptr, false);
  if (!done || report.is_discarded() || report["unique"].get<uint64_t>() != n) return 0;
  return report["items_per_s"].get<double>();
}

// Flow control against latency-bound workers: the producer's limit must
// keep each worker's threads busy while finished items wait for the sink's
// next ack batch (20 ms). Capacity: 2 threads / 1 ms = 2,000 items/s per
// worker (a little less in practice: a sleep overshoots).
//
// The yardstick is the same job with --acks off: no window, so the
// producer fills every worker's queue and the workers never wait: what the
// op can do on this machine (below the nominal 2,000 items/s per worker,
// since each sleep overshoots by tens of microseconds).
bool FlowBench(int runs) {
  std::printf("flow: producer -> k token workers (--threads 2, 1 ms per item on "
              "average) -> sink, acks on, default ack interval, against --acks off\n"
              "  (nominal capacity 2,000 items/s per worker; goal: 1 worker >= 1,800, "
              "2 workers >= 3,600, or >= 0.9 of --acks off)\n");
  for (int workers : {1, 2}) {
    std::vector<double> rates, ratios;
    for (int r = 0; r < runs; ++r) {
      const uint64_t n = 10000 * static_cast<uint64_t>(workers);
      const double off = FlowRun(workers, n, false);
      rates.push_back(FlowRun(workers, n, true));
      if (rates.back() <= 0 || off <= 0) {
        std::fprintf(stderr, "flow run with %d workers did not complete exactly\n", workers);
        return false;
      }
      ratios.push_back(rates.back() / off);
    }
    std::printf("  %d worker%s: %6.0f items/s (runs: %.0f to %.0f); %.2f of nominal, "
                "%.2f of --acks off (runs: %.2f to %.2f)\n",
                workers, workers == 1 ? " " : "s", Median(rates),
                *std::min_element(rates.begin(), rates.end()),
                *std::max_element(rates.begin(), rates.end()),
                Median(rates) / (2000.0 * workers), Median(ratios),
                *std::min_element(ratios.begin(), ratios.end()),
                *std::max_element(ratios.begin(), ratios.end()));
  }
  return true;
}

std::string Flag(int argc, char** argv, const std::string& name,
                 const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return argv[i + 1];
  }
  return fallback;
}

std::string Commit() {
  std::string cmd = std::string("git -C '") + SLUICE_SOURCE_DIR +
                    "' describe --always --dirty 2>/dev/null";
  std::FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return "unknown";
  char buffer[64] = {};
  std::string commit = std::fgets(buffer, sizeof(buffer), pipe) ? buffer : "unknown";
  pclose(pipe);
  commit.erase(commit.find_last_not_of("\n") + 1);
  return commit.empty() ? "unknown" : commit;
}

constexpr char kUsage[] =
    "usage: sluice-bench [--items N] [--runs R] [--history FILE|off] "
    "[--scaling on|off] [--latency on|off] [--async on|off] [--api on|off]\n"
    "       [--memory on|off] [--retry on|off] [--flow on|off]\n"
    "Runs the pipeline benchmarks (minutes) and prints their figures against\n"
    "yardsticks measured in the same run; appends a line to --history.\n";

// Every argument is a known flag followed by its value; --help prints the
// usage. Returns an exit code to leave with, or nullopt to run.
std::optional<int> CheckArgs(int argc, char** argv) {
  static const std::set<std::string> kFlags = {
      "--role", "--upstream", "--items", "--interval-us", "--runs", "--history",
      "--scaling", "--latency", "--async", "--api", "--memory", "--retry",
      "--flow"};
  for (int i = 1; i < argc; i += 2) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf("%s", kUsage);
      return 0;
    }
    if (!kFlags.count(arg) || i + 1 >= argc) {
      std::fprintf(stderr, "sluice-bench: %s '%s'\n%s",
                   kFlags.count(arg) ? "no value for" : "unknown flag", arg.c_str(), kUsage);
      return 64;
    }
  }
  return std::nullopt;
}

int Main(int argc, char** argv) {
  if (std::optional<int> exit_code = CheckArgs(argc, argv)) return *exit_code;
  const std::string role = Flag(argc, argv, "--role", "");
  if (!role.empty()) {
    return RunRole(role, Flag(argc, argv, "--upstream", ""),
                   std::strtoull(Flag(argc, argv, "--items", "0").c_str(), nullptr, 10),
                   std::strtoll(Flag(argc, argv, "--interval-us", "0").c_str(), nullptr, 10));
  }
  uint64_t n = std::strtoull(Flag(argc, argv, "--items", "1000000").c_str(), nullptr, 10);
  int runs = std::atoi(Flag(argc, argv, "--runs", "3").c_str());
  const std::string history =
      Flag(argc, argv, "--history", std::string(SLUICE_SOURCE_DIR) + "/bench/results/history.tsv");
  if (n < 2 || runs < 1) {
    std::fprintf(stderr, "sluice-bench: --items must be >= 2 and --runs >= 1\n%s", kUsage);
    return 64;
  }
  std::printf("sluice-bench: %llu items, %d runs each, interleaved; medians\n",
              static_cast<unsigned long long>(n), runs);
  struct Series {
    const char* name;
    bool acks, default_threads, curve;
    std::vector<double> rate, cpu;
  };
  std::vector<Series> series = {
      {"acks, default threads (token 10, result 5)", true, true, false, {}, {}},
      {"acks, 1 thread per op", true, false, false, {}, {}},
      {"--acks off, 1 thread per op", false, false, false, {}, {}},
      {"acks, 1 thread per op, CURVE on every hop", true, false, true, {}, {}},
  };
  TempDir keys;
  const std::vector<std::string> curve = CurveFlags(keys);
  if (curve.empty()) {
    std::fprintf(stderr, "sluice-keygen failed\n");
    return 70;
  }
  std::vector<double> raw_rate, raw_cpu;
  for (int r = 0; r < runs; ++r) {
    Figures raw = RawRelayChain(n);
    if (!raw.ok) {
      std::fprintf(stderr, "run %d: the raw relay chain failed\n", r + 1);
      return 70;
    }
    raw_rate.push_back(raw.items_per_s);
    raw_cpu.push_back(raw.cpu_us_per_item);
    std::printf("  run %d: raw chain %.0f msg/s (%.2f us CPU/msg)", r + 1,
                raw.items_per_s, raw.cpu_us_per_item);
    for (Series& s : series) {
      Figures f = Pipeline(n, s.acks, s.default_threads,
                           s.curve ? curve : std::vector<std::string>{});
      if (!f.ok) {
        std::fprintf(stderr, "\nrun %d: the pipeline (%s) did not complete exactly\n",
                     r + 1, s.name);
        return 70;
      }
      s.rate.push_back(f.items_per_s);
      s.cpu.push_back(f.cpu_us_per_item);
      std::printf("; %.0f (%.2f us)", f.items_per_s, f.cpu_us_per_item);
    }
    std::printf("\n");
  }
  const double raw_m = Median(raw_rate);
  std::printf("raw ZeroMQ relay chain, 4 processes, 100 B, 3 tcp hops : %10.0f msg/s  "
              "%.2f us CPU/msg\n", raw_m, Median(raw_cpu));
  std::printf("token-then-result, 0 ms, 4 processes (goal: ratio >= 2.0, CPU <= 0.6 us/item):\n");
  for (const Series& s : series) {
    std::printf("  %-44s: %10.0f items/s  ratio %.2f  %.2f us CPU/item\n", s.name,
                Median(s.rate), Median(s.rate) / raw_m, Median(s.cpu));
  }
  std::printf("CURVE (every hop encrypted, allow-list on): %.2f of the plain rate, "
              "+%.2f us CPU per item (1 thread per op, acks on)\n",
              Median(series[3].rate) / Median(series[1].rate),
              Median(series[3].cpu) - Median(series[1].cpu));

  double async_rate = 0;
  if (Flag(argc, argv, "--async", "on") != "off") {
    // Goal (issue 10): one worker, one loop thread, 10 ms calls: >= 50,000
    // items/s. Yardstick: the same worker on its default 10 threads.
    std::vector<double> threaded, async;
    uint64_t async_rss = 0;
    for (int r = 0; r < runs; ++r) {
      threaded.push_back(OneTokenWorker(4000, {}).items_per_s);
      WorkerRun a = OneTokenWorker(300000, {"--concurrency", "1000", "--threads", "1"});
      async.push_back(a.items_per_s);
      async_rss = std::max(async_rss, a.peak_rss_kib);
      if (threaded.back() <= 0 || async.back() <= 0) {
        std::fprintf(stderr, "API-bound run %d failed\n", r + 1);
        return 70;
      }
    }
    async_rate = Median(async);
    std::printf("one token worker, 10 ms calls (goal: >= 50000 items/s on one loop thread):\n"
                "  10 threads (the default)        : %10.0f items/s\n"
                "  --concurrency 1000, one thread  : %10.0f items/s  (x%.0f; peak RSS %llu KiB)\n",
                Median(threaded), async_rate, async_rate / Median(threaded),
                static_cast<unsigned long long>(async_rss));
  }
  double http_rate = 0;
  if (Flag(argc, argv, "--api", "on") != "off") {
    // Issue 10: the http op against a local API of 10 ms answers, and the
    // classic job with stage 1 batched against unbatched (stage 2 on a
    // loop, so that stage 1 is what limits).
    std::vector<double> http, http_batched, classic, classic_batched;
    double calls_per_item = 0;
    for (int r = 0; r < runs; ++r) {
      {
        TestApi api(10);
        WorkerRun h = RunWorkers(60000, {{"--op", "http", "--url", api.base + "/token/{payload}",
                                          "--concurrency", "1000"}});
        http.push_back(h.items_per_s);
        WorkerRun b = RunWorkers(300000, {{"--op", "http", "--url", api.base + "/token/batch",
                                           "--batch", "100"}});
        http_batched.push_back(b.items_per_s);
      }
      const std::vector<std::string> result = {"--op", "result", "--concurrency", "1000"};
      classic.push_back(RunWorkers(4000, {{"--op", "token"}, result}).items_per_s);
      WorkerRun c = RunWorkers(200000, {{"--op", "token", "--batch", "100"}, result});
      classic_batched.push_back(c.items_per_s);
      calls_per_item = c.counters.value("calls_0_token", 0.0) / 200000;
      if (http.back() <= 0 || http_batched.back() <= 0 || classic.back() <= 0 ||
          classic_batched.back() <= 0) {
        std::fprintf(stderr, "API run %d failed\n", r + 1);
        return 70;
      }
    }
    http_rate = Median(http);
    std::printf("http op, one worker, local API answering in [0, 10) ms:\n"
                "  one call per item, --concurrency 1000 : %10.0f items/s\n"
                "  --batch 100 (JSON arrays)             : %10.0f items/s\n"
                "classic job, token (10 ms) -> result (5 ms, --concurrency 1000):\n"
                "  token on its default 10 threads       : %10.0f items/s\n"
                "  token --batch 100                     : %10.0f items/s  (x%.0f, %.3f calls per item)\n",
                http_rate, Median(http_batched), Median(classic), Median(classic_batched),
                Median(classic_batched) / Median(classic), calls_per_item);
  }
  double raw_latency = 0, pipeline_latency = 0;
  if (Flag(argc, argv, "--latency", "on") != "off") {
    // Goal: p50 <= 1.2 x three raw hops. Medians of the runs' medians; at
    // least 9 runs (a few seconds each): one run's ratio moves by +-0.15 on
    // this machine.
    constexpr uint64_t kLatencyItems = 400;
    constexpr int64_t kIntervalUs = 5000;
    std::vector<double> raw_p50, pipeline_p50, ratios;
    const int latency_runs = std::max(runs, 9);
    for (int r = 0; r < latency_runs; ++r) {
      raw_p50.push_back(RawChainLatencyUs(kLatencyItems, kIntervalUs));
      pipeline_p50.push_back(PipelineLatencyUs(kLatencyItems, kIntervalUs));
      if (raw_p50.back() < 0 || pipeline_p50.back() < 0) {
        std::fprintf(stderr, "latency run %d failed (raw %.0f, pipeline %.0f)\n", r + 1,
                     raw_p50.back(), pipeline_p50.back());
        return 70;
      }
      ratios.push_back(pipeline_p50.back() / raw_p50.back());
    }
    raw_latency = Median(raw_p50);
    pipeline_latency = Median(pipeline_p50);
    std::printf("low load, one item every 5 ms, 3 tcp hops, %d runs (goal: ratio <= 1.2):\n"
                "  raw ZeroMQ chain p50 %.0f us; token-then-result (acks on) p50 %.0f us;"
                " ratio %.2f (runs: %.2f to %.2f)\n", latency_runs, raw_latency,
                pipeline_latency, pipeline_latency / raw_latency,
                *std::min_element(ratios.begin(), ratios.end()),
                *std::max_element(ratios.begin(), ratios.end()));
  }
  if (Flag(argc, argv, "--retry", "on") != "off" && !RetryBench(n, runs)) return 70;
  if (Flag(argc, argv, "--flow", "on") != "off" && !FlowBench(runs)) return 70;
  long rss_large_kib = 0, rss_slow_kib = 0;
  if (Flag(argc, argv, "--memory", "on") != "off") {
    const auto memory = MemoryTable(100000, 20000);
    if (!memory) return 70;
    std::tie(rss_large_kib, rss_slow_kib) = *memory;
  }
  const std::string results_dir =
      history == "off" ? "" : history.substr(0, history.find_last_of('/'));
  if (Flag(argc, argv, "--scaling", "on") != "off" && !ScalingTable(results_dir)) {
    return 70;
  }
  if (history != "off") {
    // One header for all rows; a row written before a column existed is
    // shorter. A header from before a new column is rewritten in place.
    const std::string header =
        "date\tcommit\titems\traw_chain_per_s\tacks_default_per_s\t"
        "acks_1thread_per_s\tacks_off_1thread_per_s\tratio_acks_default\t"
        "ratio_acks_1thread\tcpu_us_acks_default\tcpu_us_acks_1thread\t"
        "latency_p50_raw_us\tlatency_p50_pipeline_us\tasync_token_per_s\t"
        "http_worker_per_s\tcurve_1thread_per_s\tpeak_rss_100x_kib\t"
        "peak_rss_slow_sink_kib\n";
    std::string old = std::filesystem::exists(history) ? testing::ReadFile(history) : "";
    if (old.compare(0, old.find('\n') + 1, header) != 0) {
      old = header + (old.empty() ? "" : old.substr(old.find('\n') + 1));
      std::ofstream(history, std::ios::trunc) << old;
    }
    std::ofstream out(history, std::ios::app);
    if (!out) {
      std::fprintf(stderr, "cannot append to %s\n", history.c_str());
      return 73;
    }
    char date[32];
    std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    out << date << '\t' << Commit() << '\t' << n << '\t' << static_cast<uint64_t>(raw_m);
    for (size_t i = 0; i < 3; ++i) {  // The columns of the first three series.
      out << '\t' << static_cast<uint64_t>(Median(series[i].rate));
    }
    char tail[256];
    std::snprintf(tail, sizeof(tail),
                  "\t%.3f\t%.3f\t%.3f\t%.3f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%ld\t%ld\n",
                  Median(series[0].rate) / raw_m, Median(series[1].rate) / raw_m,
                  Median(series[0].cpu), Median(series[1].cpu), raw_latency,
                  pipeline_latency, async_rate, http_rate, Median(series[3].rate),
                  rss_large_kib, rss_slow_kib);
    out << tail;
    std::printf("appended to %s\n", history.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) { return sluice::Main(argc, argv); }
