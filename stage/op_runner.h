// stage/op_runner.h
//
// OpRunner runs one op of a stage's chain between two bounded queues, in the
// op's shape (sluice/op.h):
//
//   ItemOp, BatchOp  --threads worker threads; each takes a run of items,
//                    calls the op, retries what failed, passes the run on.
//   AsyncOp          per loop thread: a feeder thread takes items while one
//                    of --concurrency slots is free and hands them to a
//                    Boost.Asio loop, where the op starts them; completions,
//                    timeouts (--op-timeout-ms) and retry backoff are events
//                    on that loop. The loop pushes finished items on.
//
// Every shape shares the failure rules: Transient failures and exceptions
// are retried up to --retries times after an exponential backoff with
// jitter; an item out of retries, or failed Permanent, is marked failed
// (Item::failure) and passed on, never dropped. End-of-stream markers and
// items that failed earlier pass by the op untouched.
//
// Stopping: when `in` is closed and drained, each thread finishes what it
// holds; the last one out closes `out`.
//
// Thread safety: Create(), Start() and Join() from one thread.
#ifndef SLUICE_STAGE_OP_RUNNER_H_
#define SLUICE_STAGE_OP_RUNNER_H_

#include <chrono>
#include <memory>
#include <string>

#include "common/bounded_queue.h"
#include "common/counters.h"
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
};

struct OpCounters {
  Counter processed;  // Items the op finished with (kept, fanned out, dropped).
  Counter failed;     // Items given up on (dead letters).
  Counter retries;    // Attempts retried.
  Counter timeouts;   // Attempts that passed --op-timeout-ms.
  Counter dropped;    // Items the op dropped.
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
  virtual ~OpRunner() = default;
  // Makes the op's instances (one per thread); the make_* status on failure.
  static StatusOr<std::unique_ptr<OpRunner>> Create(
      const OpPlan& plan, const boost::program_options::variables_map& flags,
      OpCounters& counters);
  // Starts the threads. `in` and `out` must outlive Join(). kUnavailable
  // if the system refuses a thread: those already started still end (and
  // must be joined) once the caller closes the queues.
  virtual Status Start(BoundedQueue<Item>& in, BoundedQueue<Item>& out) = 0;
  // Waits until every thread finished (after `in` closed and drained).
  virtual void Join() = 0;
};

}  // namespace sluice

#endif  // SLUICE_STAGE_OP_RUNNER_H_
