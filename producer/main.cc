// sluice-producer: emits one stream of items into the pipeline.
#include <algorithm>
#include <iostream>

#include "common/config.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "common/log.h"
#include "producer/producer.h"

namespace sluice {
namespace {

int Main(int argc, const char* const argv[]) {
  ProgramInfo info{
      "sluice-producer",
      "Emits one stream into a Sluice pipeline: --count N items with payloads "
      "0..N-1, or one item per line of --input FILE ('-' = stdin), then an "
      "end-of-stream. Blocks, never drops, when downstream is slow. Prints "
      "'READY out=... stream=...' on stdout once its socket is up, and exits "
      "0 once everything was handed to the network."};
  CommonFlags defaults;
  defaults.socket.linger_ms = 60000;
  po::options_description options("Producer flags");
  options.add_options()
      ("out", po::value<std::string>()->default_value("@tcp://*:5557"),
       "output endpoint(s): @ binds, > connects, bare binds")
      ("count", po::value<int64_t>()->default_value(1000),
       "emit N items with payloads 0..N-1")
      ("input", po::value<std::string>(),
       "emit one item per line of FILE ('-' = stdin) instead of --count")
      ("stream", po::value<std::string>(),
       "stream id, 1..64 bytes (default: random, unique)")
      ("acks", po::value<std::string>()->default_value(">tcp://localhost:5559"),
       "where to hear the sink's acks (> connects, @ binds, bare connects); "
       "'off': fire-and-forget, nothing is resent")
      ("window", po::value<int64_t>()->default_value(10000),
       "most items in flight without an ack; the producer waits when full")
      ("give-up", po::value<double>()->default_value(60),
       "seconds without ack progress (or without the sink's ack socket) "
       "before giving up with exit 75 (69 if never connected)")
      ("rto-min-ms", po::value<int64_t>()->default_value(200),
       "smallest retransmit timeout; the timeout adapts to the ack latency")
      ("rto-max-ms", po::value<int64_t>()->default_value(30000),
       "largest retransmit timeout, after backing off")
      ("peers", po::value<int64_t>()->default_value(0),
       "before sending, wait until N downstream peers are connected, so that "
       "the first one does not get everything (0: start at once)");
  AddCommonFlags(options, kSenderFlags, defaults);

  po::variables_map vm;
  if (auto exit = ParseCommandLine(info, options, argc, argv, vm)) return *exit;

  ProducerOptions opts;
  auto out = ParseEndpoints(vm["out"].as<std::string>(), Role::kBind);
  if (!out.ok()) return ReportUsageError(info.name, "--out: " + out.status().message());
  opts.out = *out;
  int64_t count = vm["count"].as<int64_t>();
  if (Status s = CheckRange("count", count, 0, static_cast<int64_t>(kMaxStreamCount)); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }
  opts.count = static_cast<uint64_t>(count);
  if (vm.count("input")) {
    if (!vm["count"].defaulted()) {
      return ReportUsageError(info.name, "--count and --input exclude each other");
    }
    opts.input = vm["input"].as<std::string>();
  }
  opts.stream = vm.count("stream") ? vm["stream"].as<std::string>() : NewStreamId();
  if (opts.stream.empty() || opts.stream.size() > kMaxStreamIdBytes) {
    return ReportUsageError(info.name, "--stream must be 1..64 bytes");
  }
  int64_t peers = vm["peers"].as<int64_t>();
  if (Status s = CheckRange("peers", peers, 0, 100000); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }
  opts.wait_peers = static_cast<int>(peers);
  std::string acks = vm["acks"].as<std::string>();
  if (acks != "off") {
    auto endpoints = ParseEndpoints(acks, Role::kConnect);
    if (!endpoints.ok()) {
      return ReportUsageError(info.name, "--acks: " + endpoints.status().message());
    }
    opts.acks = *endpoints;
  }
  int64_t window = vm["window"].as<int64_t>();
  if (Status s = CheckRange("window", window, 1, 1'000'000); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }
  opts.window = static_cast<size_t>(window);
  double give_up = vm["give-up"].as<double>();
  if (!(give_up > 0 && give_up <= 86400 * 365)) {
    return ReportUsageError(info.name, "--give-up must be in (0, 31536000] seconds");
  }
  opts.give_up = std::chrono::milliseconds(static_cast<int64_t>(give_up * 1000));
  int64_t rto_min = vm["rto-min-ms"].as<int64_t>();
  int64_t rto_max = vm["rto-max-ms"].as<int64_t>();
  if (Status s = CheckRange("rto-min-ms", rto_min, 1, 3'600'000); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }
  if (Status s = CheckRange("rto-max-ms", rto_max, rto_min, 3'600'000); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }
  opts.retransmit.min_rto = std::chrono::milliseconds(rto_min);
  opts.retransmit.max_rto = std::chrono::milliseconds(rto_max);
  opts.retransmit.initial_rto = std::clamp(std::chrono::milliseconds(1000),
                                           opts.retransmit.min_rto,
                                           opts.retransmit.max_rto);
  auto flags = ReadCommonFlags(vm, kSenderFlags);
  if (!flags.ok()) return ReportUsageError(info.name, flags.status().message());
  opts.flags = *flags;
  if (Status s = InitLogging(info.name, vm["log-level"].as<std::string>()); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }

  StopSignal stop;
  stop.InstallSignalHandlers();
  ProducerCounters counters;
  Status status;
  {
    PeriodicTask stats(opts.flags.stats_interval, [&] {
      spdlog::info("counters {}", counters.ToJson().dump());
    });
    status = RunProducer(opts, stop, counters, std::cout);
  }
  spdlog::info("counters {}", counters.ToJson().dump());
  if (!status.ok() && status.code() != StatusCode::kCancelled) {
    spdlog::error("{}", status.message());
  } else {
    if (opts.acks.empty()) {
      spdlog::info("stream {}: {} items and end-of-stream handed to the network{}",
                   opts.stream, counters.emitted.value(),
                   stop.requested() ? " (stopped early by a signal)" : "");
    } else {
      spdlog::info("stream {}: all {} items and the end-of-stream acknowledged "
                   "by the sink ({} resent){}",
                   opts.stream, counters.emitted.value(),
                   counters.retransmits.value(),
                   stop.requested() ? " (stopped early by a signal)" : "");
    }
  }
  return ExitCodeFor(status);
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  try {
    return sluice::Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "sluice-producer: internal error: " << e.what() << "\n";
    return sluice::kExitInternal;
  }
}
