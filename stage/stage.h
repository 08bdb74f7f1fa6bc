// stage/stage.h
//
// A stage worker: receives items, applies a chain of ops, sends them on.
//
//   I/O thread (owns PULL and PUSH): frame -> run -> [cheap ops, inline]
//        -> op K's threads (a slow op) -> [cheap ops, on that thread] -> ...
//        -> back to the I/O thread -> frames -> PUSH
//
// Runs (the items of one frame) are the unit of every hand-off. Each op
// runs in its own shape (stage/op_runner.h): a pool of threads, or an event
// loop with --concurrency slots; an op measured cheaper than a hand-off runs
// on whichever thread holds the run, so a chain of cheap ops costs no
// thread switch at all. Op instances are made before the sockets open, so a
// broken op (a co-process that cannot start) stops the stage before it
// reports READY.
//
// Memory is bounded by --queue: the I/O thread reads its socket only while
// the items it holds (with the op threads, or encoded and waiting for a
// peer; items waiting out a retry's backoff are bounded apart, see
// WaitingCapacity) are fewer; a slow op or a slow downstream thus stops the reads, and
// the sender upstream meets its high-water mark. End-of-stream markers pass
// by the ops (they may overtake items; the sink copes).
//
// Stopping (a stop request): the I/O thread stops reading, lets the op
// threads finish what they hold, sends everything (bounded by the drain
// timeout), then the sockets close with a bounded linger.
#ifndef SLUICE_STAGE_STAGE_H_
#define SLUICE_STAGE_STAGE_H_

#include <chrono>
#include <deque>
#include <ostream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/endpoint.h"
#include "common/flags.h"
#include "common/frame_io.h"
#include "common/status.h"
#include "common/stop_signal.h"
#include "stage/op_runner.h"

namespace sluice {

struct StageOptions {
  std::vector<Endpoint> in;
  std::vector<Endpoint> out;
  // The sink's ack socket(s), or empty: with them, the stage drops what it
  // holds or receives of a stream the sink has reported complete.
  std::vector<Endpoint> acks;
  std::vector<OpPlan> ops;  // At least one.
  CommonFlags flags;
  // Every flag as parsed, for the ops' own (OpContext::flags).
  const boost::program_options::variables_map* op_flags = nullptr;
};

struct StageCounters {
  explicit StageCounters(size_t op_count) : ops(op_count) {}
  ReceiveCounters receive;
  SendCounters send;
  std::deque<OpCounters> ops;  // Per op of the chain.
  // Gauge: items received and not yet sent (in the chain's queues, its
  // ops, or waiting for the output). Near the stage's capacity: the stage
  // is the bottleneck, or what follows it is (see tx_blocked_us).
  Counter held_items;
  // Items (and end-of-stream markers) of streams the sink had reported
  // complete, dropped instead of sent (late duplicates; --acks).
  Counter late_dropped;
  Counter curve_refused;  // CURVE clients refused (not in --curve-allow).
  Counter handshake_failed;  // Handshakes that failed (see the log for why).
  nlohmann::json ToJson(const StageOptions& options) const;
};

// Most items the stage holds at once (received, not yet sent): --queue, and
// at least enough to fill every async slot of the chain (concurrency x loop
// threads) with two frames' worth behind them, so that --concurrency 1000
// means 1000 calls in flight.
size_t HeldCapacity(const StageOptions& options);

// Most items the stage holds waiting out a retry's backoff, on top of
// HeldCapacity(): 256 x --queue (65,536 by default: 1% of 3 M items/s
// waiting 500 ms is some 15,000, and 64 x held the job to 0.8 of its rate
// without failures). Past it the stage stops reading, as it does when it
// holds --queue items otherwise.
size_t WaitingCapacity(const StageOptions& options);

// Opens both sockets, prints "READY in=<addresses> out=<addresses>" on
// `ready_out`, then runs until a stop request and a complete drain.
Status RunStage(const StageOptions& options, StopSignal& stop,
                StageCounters& counters, std::ostream& ready_out);

}  // namespace sluice

#endif  // SLUICE_STAGE_STAGE_H_
