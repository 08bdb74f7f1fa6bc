// sluice-producer: emits one stream of items into the pipeline.
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
    spdlog::info("stream {}: {} items and end-of-stream handed to the network{}",
                 opts.stream, counters.send.tx_items.value(),
                 stop.requested() ? " (stopped early by a signal)" : "");
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
