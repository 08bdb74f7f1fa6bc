// producer/producer.h
//
// The producer emits one stream: items with sequence numbers 0..N-1, then its
// end-of-stream. Two threads joined by a bounded queue:
//
//   read thread (counts, or reads lines of a file/stdin) --queue--> send
//   thread (the caller's; owns the PUSH socket, batches what is queued)
//
// A slow downstream fills the socket's high-water mark, the send thread
// blocks, the queue fills and the read thread blocks: the producer never
// drops and never grows.
//
// On a stop request the read thread stops reading, the end-of-stream carries
// the number of items actually emitted, and everything is still sent.
#ifndef SLUICE_PRODUCER_PRODUCER_H_
#define SLUICE_PRODUCER_PRODUCER_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/endpoint.h"
#include "common/flags.h"
#include "common/frame_io.h"
#include "common/status.h"
#include "common/stop_signal.h"

namespace sluice {

struct ProducerOptions {
  std::vector<Endpoint> out;
  uint64_t count = 1000;             // Used when `input` is unset.
  std::optional<std::string> input;  // A file path, or "-" for stdin.
  std::string stream;                // Stream id; see NewStreamId().
  int wait_peers = 0;                // Peers to wait for before sending.
  CommonFlags flags;
};

struct ProducerCounters {
  Counter emitted;  // Items handed to the send thread.
  SendCounters send;
  nlohmann::json ToJson() const;
};

// A random 12-character id (fits std::string's small buffer).
std::string NewStreamId();

// Binds/connects, prints "READY out=<addresses> stream=<id>" on `ready_out`,
// emits the stream and returns once every frame was handed to the network.
// kInvalidArgument for an unreadable input or an over-long line,
// kUnavailable if an address cannot be bound or frames could not be flushed.
Status RunProducer(const ProducerOptions& options, StopSignal& stop,
                   ProducerCounters& counters, std::ostream& ready_out);

}  // namespace sluice

#endif  // SLUICE_PRODUCER_PRODUCER_H_
