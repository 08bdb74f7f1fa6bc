// stage/op_runner.h
//
// OpRunner runs one op of a stage's chain over runs of items, in the op's
// shape (sluice/op.h):
//
//   ItemOp, BatchOp  --threads worker threads share the submitted runs: a
//                    thread claims a chunk of a run (the whole run when the
//                    op is cheap, max_run items when it may block, so that
//                    the threads work on one run's items side by side),
//                    calls the op, retries what failed; the thread that
//                    finishes a run's last chunk passes the run on.
//   AsyncOp          per loop thread, a Boost.Asio loop: a submitted run is
//                    posted to the loop with the fewest items waiting (one
//                    wake-up per run), which starts its items while one of
//                    --concurrency slots is free; completions, timeouts
//                    (--op-timeout-ms) and retry backoff are events on that
//                    loop. Finished items leave together, one run per round
//                    of the loop (at most a frame's worth), in the order
//                    they finish.
//
// Cheap ops run where the run is: the runner times the op (wall time per
// item, smoothed, stage/cost_meter.h); while an ItemOp or BatchOp costs less
// than handing a run to another thread, cheap() says so and the caller (the
// stage's I/O thread, or a thread of an earlier op of the chain) calls
// RunInline() on its own thread instead of Submit(). An op that turns slow
// goes back to its threads at once.
//
// Every shape shares the failure rules: Transient failures and exceptions
// are retried up to --retries times after an exponential backoff with
// jitter; an item out of retries, or failed Permanent, is marked failed
// (Item::failure) and passed on, never dropped. End-of-stream markers and
// items that failed earlier pass by the op untouched. A retry's backoff
// holds up nothing else: an item that needs another attempt is taken out of
// its run, which goes on at once without it; it waits in the runner (the
// pool's task queue, or a timer of its loop) and, when due, is tried again
// on whichever of the op's threads is free, and travels on in a run of its
// own. The items a caller gets back therefore add up to the items it gave,
// not the runs.
//
// Stopping: after Close(), the threads finish every submitted run and every
// retry (each bounded by --retries and its backoff), pass them on, and end;
// Join() waits for them.
//
// Thread safety: Create(), Start(), Close() and Join() from one thread;
// Submit(), cheap() and RunInline() from any.
#ifndef SLUICE_STAGE_OP_RUNNER_H_
#define SLUICE_STAGE_OP_RUNNER_H_

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "common/counters.h"
#include "common/run.h"
#include "sluice/op.h"

namespace sluice {

// One op of the chain, with its flags resolved.
struct OpPlan {
  const OpDefinition* definition = nullptr;
  int index = 0;      // Position in the chain.
  int threads = 1;    // Worker threads, or loop threads for the async form.
  std::chrono::milliseconds max_latency{0};
  std::chrono::milliseconds timeout{0};  // 0 = none.
  int retries = 2;
  std::chrono::milliseconds backoff{50};  // Before the first retry.
  int concurrency = 0;  // > 0: the async form, this many slots per loop.
  size_t batch = 1;     // --batch: most items per call (ops that batch).
  std::chrono::milliseconds batch_wait{5};  // --batch-wait-ms.
};

// The runtime's counters of one op, and the op's own (OpMetrics).
struct OpCounters : OpMetrics {
  sluice::Counter processed;  // Items the op finished with (kept, fanned out, dropped).
  sluice::Counter failed;     // Items given up on (dead letters).
  sluice::Counter retries;    // Attempts retried.
  sluice::Counter timeouts;   // Attempts that passed --op-timeout-ms.
  sluice::Counter dropped;    // Items the op dropped.

  OpCounter& Counter(std::string_view name) override;
  // Adds the op's own counters to `out` as "<name><suffix>".
  void AppendNamed(nlohmann::json& out, const std::string& suffix) const;

 private:
  mutable std::mutex named_mu_;
  std::deque<std::pair<std::string, OpCounter>> named_;  // Guarded by named_mu_.
};

// The reason code of a failure message: its first word if that is a
// lower_snake code followed by ':' ("quota: over" -> "quota"), else "error".
std::string FailureReason(const std::string& message);

// Delay before retry number `retry` (1, 2, ...): base * 2^(retry-1), capped
// at 30 s, drawn uniformly from its upper half (jitter).
std::chrono::microseconds RetryBackoff(std::chrono::milliseconds base,
                                       int retry);

// "HOST:PID/NAME#THREAD".
std::string WorkerName(std::string_view op, int thread);

class OpRunner {
 public:
  // Where a finished run goes; called on one of the runner's threads.
  using Forward = std::function<void(ItemRun)>;

  virtual ~OpRunner() = default;
  // Makes the op's instances (one per thread); the make_* status on failure.
  static StatusOr<std::unique_ptr<OpRunner>> Create(
      const OpPlan& plan, const boost::program_options::variables_map& flags,
      OpCounters& counters);
  // Starts the threads. kUnavailable if the system refuses a thread: those
  // already started end once Close() is called (and must be joined).
  virtual Status Start(Forward forward) = 0;
  // Queues a (non-empty) run for the op's threads. Never blocks: the
  // caller bounds how much it has submitted and not yet got back.
  virtual void Submit(ItemRun run) = 0;
  // True while the op is measured cheaper than a hand-off to another
  // thread: run it with RunInline() then.
  virtual bool cheap() const { return false; }
  // True if a run of `items` should run with RunInline(): the op is cheap,
  // or this run is short enough that running it here costs less than the
  // two thread wake-ups of a hand-off (low load: runs of one item).
  virtual bool InlineFor(size_t /*items*/) const { return cheap(); }
  // Runs the op over `run` on the calling thread (ItemOp and BatchOp only)
  // with that thread's own instance (made on its first call, numbered
  // OpContext::thread >= threads), so that an instance never serves two
  // threads. Items that need another attempt are removed from `run` and
  // come back later through the Forward callback, from the op's threads.
  // False if the instance cannot be made: Submit() the run, and cheap()
  // stays false from then on. Not after Close().
  virtual bool RunInline(ItemRun& run) {
    (void)run;
    return false;
  }
  // Items taken out of their runs that wait out a retry's backoff (not
  // yet being tried again). The stage bounds them apart from --queue: they
  // hold memory but no thread, and one in a hundred items waiting 500 ms
  // must not stop the reads of a stage that holds 256.
  virtual size_t waiting() const { return 0; }
  // No more Submit(): the threads finish what they hold, then end.
  virtual void Close() = 0;
  // Waits until every thread has ended (after Close()).
  virtual void Join() = 0;
};

}  // namespace sluice

#endif  // SLUICE_STAGE_OP_RUNNER_H_
