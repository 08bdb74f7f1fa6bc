// stage/stage.h
//
// A stage worker: receives items, applies a chain of ops, sends them on.
//
//   receive thread (owns PULL) -> queue -> op 1 pool -> queue -> ... ->
//   op K pool -> queue -> send thread (owns PUSH)
//
// Every queue is bounded, so a slow op or a slow downstream blocks whatever
// feeds it, back to the socket upstream. End-of-stream markers pass through
// the pools like items (they may overtake items; the sink copes).
//
// Stopping (a stop request): the receive thread stops reading and closes the
// first queue; each pool drains its queue, and its last thread out closes the
// next; the send thread sends everything that reaches it (bounded by the
// drain timeout), then the sockets close with a bounded linger.
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
#include "stage/ops.h"

namespace sluice {

struct OpSpec {
  OpKind kind = OpKind::kPass;
  int threads = 1;
  std::chrono::milliseconds max_latency{0};
};

struct StageOptions {
  std::vector<Endpoint> in;
  std::vector<Endpoint> out;
  std::vector<OpSpec> ops;  // At least one.
  CommonFlags flags;
};

struct StageCounters {
  explicit StageCounters(size_t op_count) : processed(op_count) {}
  ReceiveCounters receive;
  SendCounters send;
  std::deque<Counter> processed;  // Data items done, per op.
  Counter unexpected_input;       // Items an op did not expect (still sent).
  nlohmann::json ToJson(const StageOptions& options) const;
};

// Opens both sockets, prints "READY in=<addresses> out=<addresses>" on
// `ready_out`, then runs until a stop request and a complete drain.
Status RunStage(const StageOptions& options, StopSignal& stop,
                StageCounters& counters, std::ostream& ready_out);

}  // namespace sluice

#endif  // SLUICE_STAGE_STAGE_H_
