// stage/ops.h
//
// The operations a stage can apply to an item's payload. The token-then-result
// job: `token` maps payload i to "token_i" (an API-like call of up to 10 ms),
// `result` maps "token_i" to "result_i" (up to 5 ms). `pass` forwards
// unchanged (the hub between two scaled stages).
//
// Simulated latency is a sleep uniform in [0, max): the stand-in for a remote
// call, the one place where a worker thread sleeps.
#ifndef SLUICE_STAGE_OPS_H_
#define SLUICE_STAGE_OPS_H_

#include <chrono>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sluice {

enum class OpKind { kToken, kResult, kPass };

struct OpDefaults {
  int threads;
  std::chrono::milliseconds max_latency;
};

// "token" -> kToken, ...; kInvalidArgument listing the known ops otherwise.
StatusOr<OpKind> ParseOpKind(std::string_view name);
std::string_view OpName(OpKind kind);
// token: 10 threads, 10 ms; result: 5 threads, 5 ms; pass: 1 thread, 0 ms.
OpDefaults DefaultsFor(OpKind kind);

// Rewrites `payload` in place. Returns false if the input was not what the op
// expects (result of something that is not "token_..."); the payload is then
// still transformed ("result_" + payload) so that the item is never lost.
bool ApplyOp(OpKind kind, std::string& payload);

}  // namespace sluice

#endif  // SLUICE_STAGE_OPS_H_
