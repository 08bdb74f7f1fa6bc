// StageMain: the sluice-stage program, for the built-in binary and for a
// stage of the user's own that links more ops in (sluice/op.h).
#include <cstring>
#include <deque>
#include <iostream>
#include <set>

#include "common/config.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "stage/op_registry.h"
#include "stage/stage.h"

namespace sluice {
namespace {

// The --op value on the command line (or SLUICE_OP), before full parsing:
// --help shows the flags of exactly these ops.
std::vector<std::string> OpsNamed(int argc, const char* const argv[]) {
  std::string list;
  if (const char* env = std::getenv("SLUICE_OP")) list = env;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--op" && i + 1 < argc) list = argv[i + 1];
    if (arg.starts_with("--op=")) list = std::string(arg.substr(5));
  }
  auto names = ParseNameList(list, "op");
  return names.ok() && !list.empty() ? *names : std::vector<std::string>{};
}

bool HelpAsked(int argc, const char* const argv[]) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      return true;
    }
  }
  return false;
}

std::string OpList() {
  std::string text = "Registered ops (--op NAME --help shows an op's own flags):\n";
  for (const OpDefinition* op : RegisteredOps()) {
    std::string shapes;
    if (op->make_item) shapes += "item";
    if (op->make_batch) shapes += shapes.empty() ? "batch" : ", batch";
    if (op->make_async) shapes += shapes.empty() ? "async" : ", async";
    text += "  " + op->name + std::string(op->name.size() < 10 ? 10 - op->name.size() : 1, ' ') +
            op->summary + " [" + shapes + "]\n";
  }
  return text;
}

// A per-op flag: one value per op of the chain, or one value for all.
Status ReadPerOp(const po::variables_map& vm, const char* flag, int64_t min,
                 int64_t max, size_t n_ops, std::vector<std::optional<int64_t>>& out) {
  out.assign(n_ops, std::nullopt);
  if (!vm.count(flag)) return Status::Ok();
  auto values = ParseIntList(vm[flag].as<std::string>(), flag, min, max);
  if (!values.ok()) return values.status();
  if (values->size() != 1 && values->size() != n_ops) {
    return InvalidArgument("--" + std::string(flag) + " has " +
                           std::to_string(values->size()) + " values but --op has " +
                           std::to_string(n_ops) + " ops (give one per op, or one for all)");
  }
  for (size_t i = 0; i < n_ops; ++i) out[i] = (*values)[values->size() == 1 ? 0 : i];
  return Status::Ok();
}

int Main(int argc, const char* const argv[]) {
  RegisterBuiltinOps();
  ProgramInfo info{
      "sluice-stage",
      "A Sluice stage worker: receives items on --in, applies the chain of "
      "--op (each op with its own pool of --threads, or an event loop with "
      "--concurrency slots), sends them on --out. Start as many as the work "
      "needs; they share the load. A stage that binds both sides (--in @... "
      "--out @... --op pass) is the hub between two scaled stages. Prints "
      "'READY in=... out=...' on stdout once its sockets are up. "
      "SIGINT/SIGTERM: stops reading, sends everything it holds, exits 0. "
      "An item an op fails is retried (--retries), then sent on marked "
      "failed: the sink dead-letters it, nothing is lost.\n\n"
      "Op flags are per op: a flag of an op's own (--url, --exec, ...) given "
      "once applies to every op of the chain that takes it; given several "
      "times, the k-th goes to the k-th op that takes it, and it must then be "
      "given once per such op. A list flag (--header) goes whole to each op. "
      "Example: --op http,exec,http --url URL1 --url URL2 --exec 'CMD'. In a "
      "--config file, repeat the line; SLUICE_<FLAG> gives one value for all. "
      "The stage's comma lists (--threads 4,1, ...) are per op as before.\n\n" +
      OpList()};
  po::options_description options("Stage flags");
  options.add_options()
      ("in", po::value<std::string>()->default_value(">tcp://localhost:5557"),
       "input endpoint(s): @ binds, > connects, bare connects")
      ("out", po::value<std::string>()->default_value(">tcp://localhost:5558"),
       "output endpoint(s): @ binds, > connects, bare connects")
      ("acks", po::value<std::string>()->default_value("off"),
       "the sink's ack socket(s), as the producer's --acks: the stage then "
       "drops what it holds or receives of a stream the sink reports "
       "complete (late duplicates), so a stage whose sink has finished "
       "stops at once instead of waiting --drain-timeout for nobody")
      ("op", po::value<std::string>()->default_value("pass"),
       "comma-separated chain of registered ops (listed above)")
      ("threads", po::value<std::string>(),
       "worker threads per op, e.g. 10,5 (default: the op's, token 10, "
       "result 5, others 1; loop threads with --concurrency: 1)")
      ("latency-ms", po::value<std::string>(),
       "max simulated latency per op in ms, uniform in [0, max) (defaults: "
       "token 10, result 5, others 0)")
      ("concurrency", po::value<std::string>(),
       "items in flight per loop thread for ops with an asynchronous form "
       "(0: run the per-item form on threads); the stage then holds at "
       "least that many items, whatever --queue says")
      ("retries", po::value<std::string>()->default_value("2"),
       "retries of an item whose attempt failed transiently, per op")
      ("retry-backoff-ms", po::value<std::string>()->default_value("50"),
       "wait before the first retry; doubles each time, with jitter")
      ("batch", po::value<std::string>(),
       "items per call for ops that take batches (token, result, http): a "
       "call is cut at N items or after --batch-wait-ms, whichever comes "
       "first; runs the op's asynchronous form (default --concurrency: 4 x N)")
      ("batch-wait-ms", po::value<std::string>()->default_value("5"),
       "most time a batch waits to fill once its first item is there")
      ("op-timeout-ms", po::value<std::string>()->default_value("0"),
       "per attempt: an async op or a co-process slower than this fails "
       "the attempt (0: no limit)");
  // Small internal queues: whatever a worker buffers, its siblings cannot
  // take, so deep queues hurt load balance at the tail of a stream.
  CommonFlags defaults;
  defaults.queue_capacity = 256;
  AddCommonFlags(options, kSenderFlags | kReceiverFlags | kQueueFlags, defaults);

  // Every op's own flags are known to the parser, which takes each any
  // number of times and keeps the occurrences for OpFlagsPerOp to share out
  // among the ops of the chain (stage/op_registry.h); --help shows those of
  // the ops named by --op.
  const std::vector<std::string> named = OpsNamed(argc, argv);
  const bool help = HelpAsked(argc, argv);
  std::set<std::string> shown;
  for (const OpDefinition* op : RegisteredOps()) {
    if (!op->flags) continue;
    bool wanted = std::find(named.begin(), named.end(), op->name) != named.end();
    if (help && !wanted) continue;
    po::options_description own("Flags of op " + op->name + " (" + op->summary + ")");
    AddRepeatableOpFlags(*op, own);
    options.add(own);
    shown.insert(op->name);
  }
  if (help) {
    for (const std::string& name : named) {
      const OpDefinition* op = FindOp(name);
      if (op == nullptr) {
        return ReportUsageError(info.name, "--op: unknown op '" + name +
                                               "'; registered ops: " + RegisteredOpNames());
      }
      if (!shown.count(name)) {
        info.summary += "\nOp " + name + " has no flags of its own.\n";
      }
    }
  }

  po::variables_map vm;
  if (auto exit = ParseCommandLine(info, options, argc, argv, vm)) return *exit;

  FlagReader read(vm);
  StageOptions opts;
  opts.in = read.Endpoints("in", Role::kConnect);
  opts.out = read.Endpoints("out", Role::kConnect);
  opts.acks = read.Endpoints("acks", Role::kConnect, /*may_be_off=*/true);
  if (!read.status().ok()) return ReportUsageError(info.name, read.status().message());

  auto names = ParseNameList(vm["op"].as<std::string>(), "op");
  if (!names.ok()) return ReportUsageError(info.name, names.status().message());
  std::vector<const OpDefinition*> chain;
  for (const std::string& name : *names) {
    const OpDefinition* op = FindOp(name);
    if (op == nullptr) {
      return ReportUsageError(info.name, "--op: unknown op '" + name +
                                             "'; registered ops: " + RegisteredOpNames());
    }
    chain.push_back(op);
  }
  // Each op of the chain with its own flags (OpContext::flags); both live
  // until the stage has stopped.
  auto op_flags = OpFlagsPerOp(vm, chain);
  if (!op_flags.ok()) return ReportUsageError(info.name, op_flags.status().message());
  std::deque<OpDefinition> bound_ops;
  for (size_t i = 0; i < chain.size(); ++i) {
    const OpDefinition* op = chain[i];
    const po::variables_map& own = *(*op_flags)[i];
    if (op->check) {
      if (Status s = op->check(own); !s.ok()) {
        return ReportUsageError(info.name, OpInChain(chain, i) + ": " + s.message());
      }
    }
    OpPlan plan;
    plan.definition = &bound_ops.emplace_back(WithFlags(*op, &own));
    plan.index = static_cast<int>(opts.ops.size());
    plan.threads = op->default_threads;
    plan.max_latency = op->default_latency;
    if (!op->make_item && !op->make_batch) plan.concurrency = op->default_concurrency;
    opts.ops.push_back(plan);
  }
  const size_t n = opts.ops.size();
  std::vector<std::optional<int64_t>> threads, latency, concurrency, retries,
      backoff, timeout, batch, batch_wait;
  for (Status s : {ReadPerOp(vm, "threads", 1, 1024, n, threads),
                   ReadPerOp(vm, "latency-ms", 0, 3'600'000, n, latency),
                   ReadPerOp(vm, "concurrency", 0, 1'000'000, n, concurrency),
                   ReadPerOp(vm, "retries", 0, 1000, n, retries),
                   ReadPerOp(vm, "retry-backoff-ms", 0, 3'600'000, n, backoff),
                   ReadPerOp(vm, "op-timeout-ms", 0, 86'400'000, n, timeout),
                   ReadPerOp(vm, "batch", 1, 1'000'000, n, batch),
                   ReadPerOp(vm, "batch-wait-ms", 0, 3'600'000, n, batch_wait)}) {
    if (!s.ok()) return ReportUsageError(info.name, s.message());
  }
  const bool one_concurrency_for_all =
      vm.count("concurrency") && vm["concurrency"].as<std::string>().find(',') ==
                                     std::string::npos;
  for (size_t i = 0; i < n; ++i) {
    OpPlan& plan = opts.ops[i];
    const OpDefinition& op = *plan.definition;
    if (concurrency[i]) {
      if (*concurrency[i] > 0 && !op.make_async) {
        if (!one_concurrency_for_all) {
          return ReportUsageError(info.name, "--concurrency: op " + op.name +
                                                 " has no asynchronous form");
        }
      } else if (*concurrency[i] == 0 && !op.make_item && !op.make_batch) {
        return ReportUsageError(info.name, "--concurrency: op " + op.name +
                                               " is asynchronous only; give it 1 or more");
      } else {
        plan.concurrency = static_cast<int>(*concurrency[i]);
      }
    }
    if (batch[i] && *batch[i] > 1) {
      if (!op.batches) {
        return ReportUsageError(info.name, "--batch: op " + op.name +
                                               " does not take batches");
      }
      plan.batch = static_cast<size_t>(*batch[i]);
      if (!concurrency[i] || *concurrency[i] == 0) {
        plan.concurrency = static_cast<int>(std::max<int64_t>(op.default_concurrency,
                                                              4 * *batch[i]));
      }
    }
    if (batch_wait[i]) plan.batch_wait = std::chrono::milliseconds(*batch_wait[i]);
    if (plan.concurrency > 0) plan.threads = 1;
    if (threads[i]) plan.threads = static_cast<int>(*threads[i]);
    const po::variables_map& own = *(*op_flags)[i];
    if (op.name == "exec" && own["exec-procs"].as<int64_t>() > 0) {
      plan.threads = static_cast<int>(own["exec-procs"].as<int64_t>());
    }
    if (latency[i]) plan.max_latency = std::chrono::milliseconds(*latency[i]);
    if (retries[i]) plan.retries = static_cast<int>(*retries[i]);
    if (backoff[i]) plan.backoff = std::chrono::milliseconds(*backoff[i]);
    if (timeout[i]) plan.timeout = std::chrono::milliseconds(*timeout[i]);
  }
  auto flags = ReadCommonFlags(vm, kSenderFlags | kReceiverFlags | kQueueFlags);
  if (!flags.ok()) return ReportUsageError(info.name, flags.status().message());
  opts.flags = *flags;
  opts.op_flags = &vm;  // The ops see their own (WithFlags above).
  if (Status s = InitLogging(info.name, vm["log-level"].as<std::string>(),
                             vm["log-format"].as<std::string>()); !s.ok()) {
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

int StageMain(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "sluice-stage: internal error: " << e.what() << "\n";
    return kExitInternal;
  }
}

}  // namespace sluice
