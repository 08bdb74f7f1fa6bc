// sluice-sink: the end of the pipeline; decides and reports completion.
#include <unistd.h>

#include <iostream>

#include "common/config.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "sink/sink.h"

namespace sluice {
namespace {

int Main(int argc, const char* const argv[]) {
  ProgramInfo info{
      "sluice-sink",
      "The end of a Sluice pipeline. Receives results on --in, counts every "
      "(stream, sequence number) once, writes payloads to --output (in "
      "sequence order with --ordered) and failed items to --dead-letter, "
      "and decides completion: a stream is complete when its end-of-stream "
      "arrived and every item below its count, succeeded or failed. Prints "
      "'READY in=...' once bound, live progress on a terminal (stderr), and "
      "a summary on stdout. Exits 0 after --streams complete streams, 65 "
      "if they completed with failed items, 75 after --idle-timeout with "
      "items missing."};
  po::options_description options("Sink flags");
  options.add_options()
      ("in", po::value<std::string>()->default_value("@tcp://*:5558"),
       "input endpoint(s): @ binds, > connects, bare binds")
      ("streams", po::value<int64_t>()->default_value(1),
       "exit after K complete streams (0: run until stopped)")
      ("output", po::value<std::string>(),
       "write each result payload to FILE (see --output-format); never "
       "overwrites data it cannot resume from without --fresh")
      ("output-format", po::value<std::string>()->default_value("lines"),
       "lines: payload and a newline (a payload holding a newline fails "
       "its item, reason newline_in_payload); jsonl: one JSON object with "
       "stream, seq and payload (payload_base64 when not UTF-8); lp: a "
       "4-byte big-endian length, then the payload")
      ("state", po::value<std::string>(),
       "the sink's state file, for a restart that goes on where the last "
       "run stopped (default: OUTPUT.state with --output; 'off': none)")
      ("durability", po::value<std::string>()->default_value("process"),
       "when an ack may go out: process (output and state handed to the "
       "operating system: survives kill -9 of the sink) or fsync (also on "
       "disk: survives a power cut; one fdatasync per commit)")
      ("fresh", po::bool_switch(),
       "start anew: cut --output, --dead-letter and --state to nothing "
       "(only once this sink holds their locks)")
      ("seen-window", po::value<int64_t>()->default_value(1 << 22),
       "per stream, how far above its lowest missing seq an item may be; "
       "further ones are refused and counted (it tells producers, who keep "
       "within it). Bounds the sink's memory per stream (window / 8 bytes)")
      ("dead-letter", po::value<std::string>(),
       "write each failed item to FILE, one JSON object per line (payload, "
       "stream, seq, op, reason, detail, worker, attempts)")
      ("ordered", po::bool_switch(),
       "write --output in sequence order per stream (bounded reorder buffer)")
      ("reorder-window", po::value<int64_t>()->default_value(100000),
       "most items --ordered buffers per stream before it writes past a gap")
      ("report", po::value<std::string>(),
       "write the JSON report to FILE when a stream completes and on exit")
      ("idle-timeout", po::value<double>()->default_value(0),
       "seconds without a message, with work incomplete, before giving up "
       "with exit 75 (0: wait forever)")
      ("max-streams", po::value<int64_t>()->default_value(1024),
       "most streams tracked at once; items of further streams are dropped "
       "and counted")
      ("acks", po::value<std::string>()->default_value("@tcp://*:5559"),
       "where to publish acks to producers (@ binds, > connects, bare "
       "binds); 'off': no acks (producers must then run with --acks off)")
      ("ack-batch", po::value<int64_t>()->default_value(1024),
       "publish a stream's acks once this many items are pending...")
      ("ack-interval-ms", po::value<int64_t>()->default_value(20),
       "...or once the oldest pending one waited this long (also the "
       "longest time between commits of --state)")
      ("max-rate", po::value<double>()->default_value(0),
       "take at most N items/s (a deliberately slow consumer, to see "
       "backpressure at work; 0: unlimited)")
      ("progress", po::value<std::string>()->default_value("auto"),
       "live progress on stderr: auto (if a terminal), on, off");
  AddCommonFlags(options, kReceiverFlags);

  po::variables_map vm;
  if (auto exit = ParseCommandLine(info, options, argc, argv, vm)) return *exit;

  FlagReader read(vm);
  SinkOptions opts;
  opts.in = read.Endpoints("in", Role::kBind);
  opts.streams = static_cast<uint64_t>(read.Int("streams", 0, 1'000'000));
  if (vm.count("output")) opts.output = vm["output"].as<std::string>();
  if (vm.count("dead-letter")) opts.dead_letter = vm["dead-letter"].as<std::string>();
  opts.ordered = vm["ordered"].as<bool>();
  if (opts.ordered && opts.output.empty()) {
    read.Fail(InvalidArgument("--ordered needs --output FILE"));
  }
  opts.reorder_capacity =
      static_cast<size_t>(read.Int("reorder-window", 1, 100'000'000));
  if (auto format = ParseOutputFormat(vm["output-format"].as<std::string>())) {
    opts.output_format = *format;
  } else {
    read.Fail(InvalidArgument("--output-format must be lines, jsonl or lp"));
  }
  if (vm.count("state")) {
    std::string state = vm["state"].as<std::string>();
    if (state.empty()) read.Fail(InvalidArgument("--state must name a file, or be 'off'"));
    if (state != "off") opts.state = state;
  } else if (!opts.output.empty()) {
    opts.state = opts.output + ".state";
  }
  const std::string durability = vm["durability"].as<std::string>();
  if (durability == "process" || durability == "fsync") {
    opts.durability = durability == "fsync" ? Durability::kFsync : Durability::kProcess;
  } else {
    read.Fail(InvalidArgument("--durability must be process or fsync"));
  }
  opts.fresh = vm["fresh"].as<bool>();
  opts.seen_window = static_cast<uint64_t>(read.Int("seen-window", 64, 1 << 30));
  if (vm.count("report")) opts.report = vm["report"].as<std::string>();
  auto idle = read.Seconds("idle-timeout", 0, 86400 * 365);
  if (idle.count() > 0) opts.idle_timeout = idle;
  opts.max_streams = static_cast<size_t>(read.Int("max-streams", 1, 1'000'000));
  opts.acks = read.Endpoints("acks", Role::kBind, /*may_be_off=*/true);
  opts.ack.batch_items = static_cast<size_t>(read.Int("ack-batch", 1, 1'000'000));
  opts.ack.interval = std::chrono::milliseconds(read.Int("ack-interval-ms", 1, 60'000));
  opts.ack.max_topics = opts.max_streams * 4;  // An ack topic and hellos per stream.
  opts.commit_interval = opts.ack.interval;
  opts.max_rate = vm["max-rate"].as<double>();
  if (!(opts.max_rate >= 0 && opts.max_rate <= 1e9)) {
    read.Fail(InvalidArgument("--max-rate must be 0..1e9 items/s"));
  }
  std::string progress = vm["progress"].as<std::string>();
  if (progress == "auto") {
    opts.progress = isatty(STDERR_FILENO);
  } else if (progress == "on" || progress == "off") {
    opts.progress = progress == "on";
  } else {
    read.Fail(InvalidArgument("--progress must be auto, on or off"));
  }
  auto flags = ReadCommonFlags(vm, kReceiverFlags);
  if (!flags.ok()) read.Fail(flags.status());
  if (!read.status().ok()) return ReportUsageError(info.name, read.status().message());
  opts.flags = *flags;
  if (Status s = InitLogging(info.name, vm["log-level"].as<std::string>(),
                             vm["log-format"].as<std::string>()); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }

  StopSignal stop;
  stop.InstallSignalHandlers();
  SinkCounters counters;
  auto metrics = StartMetricsIfAsked(opts.flags.metrics_address, info.name,
                                     [&] { return counters.ToJson(); });
  if (!metrics.ok()) {
    spdlog::error("{}", metrics.status().message());
    return ExitCodeFor(metrics.status());
  }
  SinkOutcome outcome;
  Status status = RunSink(opts, stop, counters, std::cout, std::cerr, outcome);
  spdlog::info("counters {}", counters.ToJson().dump());
  if (!outcome.summary.empty()) std::cout << outcome.summary << std::flush;
  if (!status.ok() && status.code() != StatusCode::kCancelled) {
    spdlog::error("{}", status.message());
  }
  return ExitCodeFor(status);
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  try {
    return sluice::Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "sluice-sink: internal error: " << e.what() << "\n";
    return sluice::kExitInternal;
  }
}
