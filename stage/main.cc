// sluice-stage: a stage worker (or, binding both sides with op pass, a hub).
#include <iostream>

#include "common/config.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "stage/stage.h"

namespace sluice {
namespace {

int Main(int argc, const char* const argv[]) {
  ProgramInfo info{
      "sluice-stage",
      "A Sluice stage worker: receives items on --in, applies the chain of "
      "--op (each op with its own pool of --threads), sends them on --out. "
      "Start as many as the work needs; they share the load. A stage that "
      "binds both sides (--in @... --out @... --op pass) is the hub between "
      "two scaled stages. Prints 'READY in=... out=...' on stdout once its "
      "sockets are up. SIGINT/SIGTERM: stops reading, sends everything it "
      "holds, exits 0."};
  po::options_description options("Stage flags");
  options.add_options()
      ("in", po::value<std::string>()->default_value(">tcp://localhost:5557"),
       "input endpoint(s): @ binds, > connects, bare connects")
      ("out", po::value<std::string>()->default_value(">tcp://localhost:5558"),
       "output endpoint(s): @ binds, > connects, bare connects")
      ("op", po::value<std::string>()->default_value("pass"),
       "comma-separated chain of ops: token, result, pass")
      ("threads", po::value<std::string>(),
       "worker threads per op, e.g. 10,5 (defaults: token 10, result 5, "
       "pass 1)")
      ("latency-ms", po::value<std::string>(),
       "max simulated latency per op in ms, uniform in [0, max) (defaults: "
       "token 10, result 5, pass 0)");
  // Small internal queues: whatever a worker buffers, its siblings cannot
  // take, so deep queues hurt load balance at the tail of a stream.
  CommonFlags defaults;
  defaults.queue_capacity = 256;
  AddCommonFlags(options, kSenderFlags | kReceiverFlags, defaults);

  po::variables_map vm;
  if (auto exit = ParseCommandLine(info, options, argc, argv, vm)) return *exit;

  FlagReader read(vm);
  StageOptions opts;
  opts.in = read.Endpoints("in", Role::kConnect);
  opts.out = read.Endpoints("out", Role::kConnect);
  if (!read.status().ok()) return ReportUsageError(info.name, read.status().message());

  auto names = ParseNameList(vm["op"].as<std::string>(), "op");
  if (!names.ok()) return ReportUsageError(info.name, names.status().message());
  for (const std::string& name : *names) {
    auto kind = ParseOpKind(name);
    if (!kind.ok()) return ReportUsageError(info.name, "--op: " + kind.status().message());
    OpDefaults d = DefaultsFor(*kind);
    opts.ops.push_back({*kind, d.threads, d.max_latency});
  }
  auto per_op = [&](const char* flag, int64_t max,
                    auto apply) -> std::optional<int> {
    if (!vm.count(flag)) return std::nullopt;
    auto values = ParseIntList(vm[flag].as<std::string>(), flag,
                               std::string_view(flag) == "threads" ? 1 : 0, max);
    if (!values.ok()) return ReportUsageError(info.name, values.status().message());
    if (values->size() != opts.ops.size()) {
      return ReportUsageError(
          info.name, "--" + std::string(flag) + " has " +
                         std::to_string(values->size()) + " values but --op has " +
                         std::to_string(opts.ops.size()) + " ops");
    }
    for (size_t i = 0; i < values->size(); ++i) apply(opts.ops[i], (*values)[i]);
    return std::nullopt;
  };
  if (auto exit = per_op("threads", 1024, [](OpSpec& op, int64_t v) {
        op.threads = static_cast<int>(v);
      })) {
    return *exit;
  }
  if (auto exit = per_op("latency-ms", 3'600'000, [](OpSpec& op, int64_t v) {
        op.max_latency = std::chrono::milliseconds(v);
      })) {
    return *exit;
  }
  auto flags = ReadCommonFlags(vm, kSenderFlags | kReceiverFlags);
  if (!flags.ok()) return ReportUsageError(info.name, flags.status().message());
  opts.flags = *flags;
  if (Status s = InitLogging(info.name, vm["log-level"].as<std::string>()); !s.ok()) {
    return ReportUsageError(info.name, s.message());
  }

  StopSignal stop;
  stop.InstallSignalHandlers();
  StageCounters counters(opts.ops.size());
  auto metrics = StartMetricsIfAsked(opts.flags.metrics_address, info.name,
                                     [&] { return counters.ToJson(opts); });
  if (!metrics.ok()) {
    spdlog::error("{}", metrics.status().message());
    return ExitCodeFor(metrics.status());
  }
  Status status;
  {
    PeriodicTask stats(opts.flags.stats_interval, [&] {
      spdlog::info("counters {}", counters.ToJson(opts).dump());
    });
    status = RunStage(opts, stop, counters, std::cout);
  }
  spdlog::info("counters {}", counters.ToJson(opts).dump());
  if (!status.ok()) {
    spdlog::error("{}", status.message());
  } else {
    spdlog::info("stopped after sending {} items; nothing held was lost",
                 counters.send.tx_items.value());
  }
  return ExitCodeFor(status);
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  try {
    return sluice::Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "sluice-stage: internal error: " << e.what() << "\n";
    return sluice::kExitInternal;
  }
}
