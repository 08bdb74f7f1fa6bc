// sluice-producer: emits one stream of items into the pipeline.
#include <algorithm>
#include <iostream>

#include "common/config.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/text.h"
#include "producer/producer.h"

namespace sluice {
namespace {

int Main(int argc, const char* const argv[]) {
  ProgramInfo info{
      "sluice-producer",
      "Emits one stream into a Sluice pipeline: --count N items with payloads "
      "0..N-1, or one item per line of --input FILE ('-' = stdin), then an "
      "end-of-stream. Blocks, never drops, when downstream is slow. Prints "
      "'READY out=... stream=...' on stdout once its socket is up. Exits 0 "
      "once the sink has acknowledged every item and the end-of-stream "
      "(with --acks off: once all of it was handed to the network), 75 if "
      "that does not happen (see --give-up; the same command resumes), 69 "
      "if the sink's ack socket never answered."};
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
       "stream id, 1..64 bytes of printable UTF-8 (default: with --input "
       "FILE, an id stable for that file, so a restart resumes it; else "
       "random). A producer started again with the same id resumes: it "
       "sends only what the sink does not hold yet")
      ("max-item-bytes", po::value<int64_t>()->default_value(
           static_cast<int64_t>(kDefaultMaxFrameBytes) - 1024),
       "longest input line; a longer one becomes a failed item "
       "(item_too_large, in the sink's dead letters) and the stream goes on. "
       "Receivers must take frames this big (--max-frame-bytes)")
      ("acks", po::value<std::string>()->default_value(">tcp://localhost:5559"),
       "where to hear the sink's acks (> connects, @ binds, bare connects); "
       "'off': fire-and-forget, nothing is resent")
      ("window", po::value<int64_t>()->default_value(40000),
       "most items in flight without an ack; the producer waits when full. "
       "Below rate x round trip it limits throughput. Their seqs may span "
       "as far as the sink takes (its --seen-window), so that a few items "
       "waiting for a retry hold back nothing else")
      ("window-mib", po::value<int64_t>()->default_value(64),
       "most payload MiB in flight without an ack (the producer keeps a "
       "copy of each for replay); one item always goes")
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
  AddCommonFlags(options, kSenderFlags | kQueueFlags, defaults);

  po::variables_map vm;
  if (auto exit = ParseCommandLine(info, options, argc, argv, vm)) return *exit;

  FlagReader read(vm);
  ProducerOptions opts;
  opts.out = read.Endpoints("out", Role::kBind);
  opts.count = static_cast<uint64_t>(
      read.Int("count", 0, static_cast<int64_t>(kMaxStreamCount)));
  if (vm.count("input")) {
    if (!vm["count"].defaulted()) {
      read.Fail(InvalidArgument("--count and --input exclude each other"));
    }
    opts.input = vm["input"].as<std::string>();
  }
  if (vm.count("stream")) {
    opts.stream = vm["stream"].as<std::string>();
  } else if (opts.input && *opts.input != "-") {
    auto id = StreamIdForFile(*opts.input);
    if (id.ok()) opts.stream = *id;
    else read.Fail(id.status());
  } else {
    opts.stream = NewStreamId();
  }
  if (opts.stream.empty() || opts.stream.size() > kMaxStreamIdBytes ||
      !PrintableText(opts.stream)) {
    read.Fail(InvalidArgument("--stream must be 1..64 bytes of printable UTF-8"));
  }
  opts.epoch = NewEpoch();
  opts.max_item_bytes = static_cast<size_t>(read.Int(
      "max-item-bytes", 1, int64_t{1} << 30));
  opts.wait_peers = static_cast<int>(read.Int("peers", 0, 100000));
  opts.acks = read.Endpoints("acks", Role::kConnect, /*may_be_off=*/true);
  opts.window = static_cast<size_t>(read.Int("window", 1, 1'000'000));
  opts.window_bytes = static_cast<size_t>(read.Int("window-mib", 1, 1 << 20)) << 20;
  opts.give_up = read.Seconds("give-up", 0, 86400 * 365, /*exclusive_min=*/true);
  int64_t rto_min = read.Int("rto-min-ms", 1, 3'600'000);
  int64_t rto_max = read.Int("rto-max-ms", rto_min, 3'600'000);
  opts.retransmit.min_rto = std::chrono::milliseconds(rto_min);
  opts.retransmit.max_rto = std::chrono::milliseconds(rto_max);
  opts.retransmit.initial_rto = std::clamp(std::chrono::milliseconds(1000),
                                           opts.retransmit.min_rto,
                                           opts.retransmit.max_rto);
  auto flags = ReadCommonFlags(vm, kSenderFlags | kQueueFlags);
  if (!flags.ok()) read.Fail(flags.status());
  if (!read.status().ok()) return ReportUsageError(info.name, read.status().message());
  opts.flags = *flags;
  if (Status s = InitLogging(info.name, vm["log-level"].as<std::string>(),
                             vm["log-format"].as<std::string>()); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }

  StopSignal stop;
  stop.InstallSignalHandlers();
  ProducerCounters counters;
  auto metrics = StartMetricsIfAsked(opts.flags.metrics_address, info.name,
                                     [&] { return counters.ToJson(); });
  if (!metrics.ok()) {
    spdlog::error("{}", metrics.status().message());
    return ExitCodeFor(metrics.status());
  }
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
