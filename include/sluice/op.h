// include/sluice/op.h
//
// Writing an op: the work a Sluice stage does to each item.
//
// An op is a small class of one of three shapes, registered by name with one
// line. `sluice-stage --op NAME` then runs it, `sluice-stage --help` lists
// it, and `sluice-stage --op NAME --help` shows its own flags. The built-in
// ops (token, result, pass, exec) are written with exactly this API.
//
//   class Upper : public sluice::ItemOp {
//    public:
//     sluice::Status Process(sluice::Item& item) override {
//       for (char& c : item.payload) c = std::toupper((unsigned char)c);
//       return sluice::Status::Ok();
//     }
//   };
//   static sluice::RegisterOp upper({.name = "upper",
//                                    .summary = "upper-cases each payload",
//                                    .make_item = sluice::Make<Upper>});
//
// Shapes:
//   ItemOp   one call per item, on one of the op's --threads worker threads.
//   BatchOp  one call per run of items (up to OpDefinition::max_run).
//   AsyncOp  Start() an item now, complete it later from a callback; up to
//            --concurrency items in flight per loop thread (Boost.Asio).
//
// Instances and threads: the stage makes one instance per worker thread (per
// loop thread for AsyncOp), so an op's members are per-thread state and need
// no locks. Instances are made before the stage reports READY: a make_*
// function that fails stops the stage with a clear error.
//
// Cheap ops cost no hand-off: the stage times each ItemOp and BatchOp, and
// while one costs under about a microsecond per item it runs it on the
// thread that holds the items (the stage's I/O thread, or a thread of an
// earlier op of the chain; each such thread gets an instance of its own,
// made when first needed) instead of waking a worker thread. Spare
// --threads then sleep.
//
// Per-item results: an op returns (or, for AsyncOp, completes with) a Status
// per item.
//   OK            the item goes on: payload rewritten in place, more outputs
//                 added (Item::AddOutput) or dropped (Item::Drop).
//   Transient()   this attempt failed, try again: retried up to --retries
//                 times with exponential backoff and jitter.
//   Permanent()   the item cannot succeed: failed at once.
// An exception thrown by an op counts as Transient. An item that has used up
// its retries is *failed*: it travels on to the sink, which counts it and
// writes it to its --dead-letter file; the stream still completes.
// The reason is the message's first word when it is a lower_snake code
// followed by ':' ("quota: over the limit" -> "quota"), else "error"; the
// sink counts failed items by reason.
//
// Rule for failures: an op that fails an item leaves it as it found it (it
// rewrites the payload only on success), so that a retry sees the same input
// and the dead-letter file holds what the op could not handle. This is what
// lets the runtime retry without copying every payload.
//
// Counters of its own: an op asks OpContext::metrics for named counters
// when it is made (calls made, cache hits, ...); the stage exports them
// with its own, as "<name>_<op index>_<op>", in its counters log line and
// on --metrics. Every instance of the op shares a counter of one name.
//
// Fan-out in a chain: when an item with several outputs reaches the next op,
// that op sees each output as an item of its own (same stream and seq); the
// results are joined back into one item, and the item fails if any part does.
#ifndef SLUICE_OP_H_
#define SLUICE_OP_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <boost/program_options.hpp>

#include "sluice/item.h"
#include "sluice/status.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace sluice {

// Fails this attempt of an item; the runtime may retry it.
inline Status Transient(std::string message) {
  return Status(StatusCode::kUnavailable, std::move(message));
}
// Fails the item for good: no retry.
inline Status Permanent(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}

// A statistic an op keeps (relaxed atomic: never a synchronizer).
class OpCounter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// The op's named counters. Thread safety: Counter() may be called from any
// thread; a returned reference stays valid for the life of the stage.
class OpMetrics {
 public:
  virtual ~OpMetrics() = default;
  // The counter `name` (lower_snake), made on first use. Look counters up
  // once, when the instance is made, not per item.
  virtual OpCounter& Counter(std::string_view name) = 0;
};

// Where one op instance runs. Valid for the instance's lifetime.
struct OpContext {
  std::string_view name;  // The registered name ("upper").
  int op_index = 0;       // Position in the --op chain, from 0.
  // This instance's thread, 0..threads-1; or `threads` and up for the
  // instances the stage makes (on first use) for the other threads that run
  // a cheap op where its items are (its I/O thread, an earlier op's).
  int thread = 0;
  int threads = 1;        // Instances of this op in the process.
  // --latency-ms for this op: simulated ops sleep (or wait) uniformly in
  // [0, max_latency). Other ops may ignore it.
  std::chrono::milliseconds max_latency{0};
  // --op-timeout-ms, 0 = none. The runtime enforces it for AsyncOp (Cancel);
  // an ItemOp or BatchOp that can block (a remote call, a co-process)
  // enforces it itself and fails the item with "timeout: ...".
  std::chrono::milliseconds timeout{0};
  // --batch and --batch-wait-ms, for an op that takes batches
  // (OpDefinition::batches): an AsyncOp then gathers the items it is
  // started on into calls of up to `batch` items, cut once full or
  // `batch_wait` after the first (sluice/gather.h does that). 1 = no batches.
  size_t batch = 1;
  std::chrono::milliseconds batch_wait{0};
  // Every flag of the stage, with the op's own as given for this op of the
  // chain: a flag of the op's given once applies to every op that takes
  // it; given several times, the k-th goes to the k-th op that takes it
  // (--op http,http --url A --url B). Defaults and types as declared.
  const boost::program_options::variables_map* flags = nullptr;
  // "HOST:PID/NAME#THREAD", for logs and dead letters.
  std::string worker;
  // The op's named counters (never null in a stage).
  OpMetrics* metrics = nullptr;
  // AsyncOp only: --concurrency, the items this instance has in flight at
  // most.
  int concurrency = 0;
  // AsyncOp only: the event loop this instance runs on. Start(), Cancel()
  // and every completion happen on its one thread.
  boost::asio::io_context* io = nullptr;
};

class ItemOp {
 public:
  virtual ~ItemOp() = default;
  // Processes one item on this instance's thread. May block (that thread is
  // the op's unit of concurrency: --threads of them run at once).
  virtual Status Process(Item& item) = 0;
};

class BatchOp {
 public:
  virtual ~BatchOp() = default;
  // Processes a run of items in one call. Every statuses[i] is OK on entry;
  // set it to fail item i. items.size() == statuses.size() >= 1.
  virtual void ProcessBatch(std::span<Item> items,
                            std::span<Status> statuses) = 0;
};

class AsyncRunner;

// Completes one asynchronous attempt. Cheap to copy (no allocation); call it
// exactly once, on the loop thread. A call after the attempt timed out is
// ignored.
class Completion {
 public:
  Completion(AsyncRunner* runner, uint32_t slot, uint32_t generation)
      : runner_(runner), slot_(slot), generation_(generation) {}
  void operator()(Status status) const;

 private:
  AsyncRunner* runner_;
  uint32_t slot_;
  uint32_t generation_;
};

class AsyncOp {
 public:
  virtual ~AsyncOp() = default;
  // Starts work on `item` and returns at once. The item stays valid and
  // unchanged by anyone else until the op calls `done`; the op writes its
  // result into it first. Runs on the loop thread; must not block.
  virtual void Start(Item& item, Completion done) = 0;
  // The attempt on `item` passed --op-timeout-ms. After Cancel() returns the
  // op no longer touches `item`; a later `done` for it is ignored.
  virtual void Cancel(Item& item) { (void)item; }
  // When the stage stops, the loop ends once no item is in flight: waits
  // the op still has pending then (an idle connection, a timer) are
  // abandoned, never run. The op is destroyed after its loop has ended.
};

// An op as registered: its name, help, flags and how to make instances.
// Give at least one make_* function; with make_async and another, the stage
// runs the asynchronous form when --concurrency is given.
struct OpDefinition {
  std::string name;     // lower-case letters, digits, '-' and '_'.
  std::string summary;  // One line for --help.
  std::function<StatusOr<std::unique_ptr<ItemOp>>(const OpContext&)> make_item;
  std::function<StatusOr<std::unique_ptr<BatchOp>>(const OpContext&)> make_batch;
  std::function<StatusOr<std::unique_ptr<AsyncOp>>(const OpContext&)> make_async;
  // Registers the op's own flags (shown by --op NAME --help). Names must not
  // clash with another op's or the stage's. Each op of the chain gets its
  // own values (OpContext::flags); a flag whose value is a vector (repeat
  // it for more values) goes whole to every op that takes it. Called more
  // than once: declare the same flags each time.
  std::function<void(boost::program_options::options_description&)> flags;
  // Validates the op's flags, once per op of the chain, with the flags that
  // op will see, before any instance is made. A non-OK status is a usage
  // error: the stage prints it and exits 64.
  std::function<Status(const boost::program_options::variables_map&)> check;
  int default_threads = 1;                      // --threads when not given.
  std::chrono::milliseconds default_latency{0};  // --latency-ms when not given.
  int default_concurrency = 64;  // --concurrency when not given (async only).
  // The asynchronous form honours --batch (OpContext::batch); without this,
  // --batch on the op is a usage error.
  bool batches = false;
  // BatchOp: the most items per call. (An ItemOp needs no hint: the stage
  // measures it, hands a cheap one whole runs, and a slow one an item at a
  // time per thread.)
  size_t max_run = 1;
};

// Registers an op when constructed; declare one at namespace scope, in the
// file of the op. Registering a name twice aborts at start-up with a message.
class RegisterOp {
 public:
  explicit RegisterOp(OpDefinition definition);
};

// make_item / make_batch / make_async for a class constructible from an
// OpContext, or default-constructible.
template <typename T>
auto Make(const OpContext& context) {
  using Base = std::conditional_t<
      std::is_base_of_v<ItemOp, T>, ItemOp,
      std::conditional_t<std::is_base_of_v<BatchOp, T>, BatchOp, AsyncOp>>;
  static_assert(std::is_base_of_v<Base, T>, "an op derives from an op shape");
  if constexpr (std::is_constructible_v<T, const OpContext&>) {
    return StatusOr<std::unique_ptr<Base>>(std::make_unique<T>(context));
  } else {
    (void)context;
    return StatusOr<std::unique_ptr<Base>>(std::make_unique<T>());
  }
}

// Runs the sluice-stage program (flags, logging, signals, metrics, the
// stage, exit code) with every registered op. The sluice-stage binary is
// `int main(int argc, char** argv) { return sluice::StageMain(argc, argv); }`
// and so is a stage of your own that links its ops in (Sluice::stage_main
// provides exactly that main).
int StageMain(int argc, char** argv);

}  // namespace sluice

#endif  // SLUICE_OP_H_
