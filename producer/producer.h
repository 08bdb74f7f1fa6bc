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
// With acks (the default), a third thread owns a SUB socket subscribed to
// the sink's acks for this stream, and the send thread keeps every sent item
// in an InflightWindow until it is acknowledged, resending what times out.
// The run succeeds only once every item and the end-of-stream are
// acknowledged; after `give_up` without progress it fails (kIncomplete).
//
// On a stop request the read thread stops reading, the end-of-stream carries
// the number of items actually emitted, and everything is still sent (and,
// with acks, acknowledged).
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
#include "producer/inflight_window.h"

namespace sluice {

struct ProducerOptions {
  std::vector<Endpoint> out;
  uint64_t count = 1000;             // Used when `input` is unset.
  std::optional<std::string> input;  // A file path, or "-" for stdin.
  std::string stream;                // Stream id; see NewStreamId().
  int wait_peers = 0;                // Peers to wait for before sending.
  CommonFlags flags;
  // Where to hear the sink's acks; empty = fire-and-forget.
  std::vector<Endpoint> acks;
  size_t window = 10000;             // Most unacknowledged items.
  std::chrono::milliseconds give_up{60000};  // Without ack progress.
  RetransmitOptions retransmit;
};

struct ProducerCounters {
  Counter emitted;       // Items handed to the send thread.
  Counter acked;         // Entries released by acks (items + end-of-stream).
  Counter ack_frames;    // Ack frames accepted.
  Counter retransmits;   // Items and end-of-stream markers sent again.
  RejectCounters ack_rejected;
  SendCounters send;
  nlohmann::json ToJson() const;
};

// A random 12-character id (fits std::string's small buffer).
std::string NewStreamId();

// Binds/connects, prints "READY out=<addresses> stream=<id>" on `ready_out`,
// emits the stream and returns once every frame was handed to the network.
// kInvalidArgument for an unreadable input or an over-long line,
// kUnavailable if an address cannot be bound, frames could not be flushed or
// (with acks) the sink's ack socket never answered, kIncomplete if acks
// stopped coming for `give_up` with items outstanding.
Status RunProducer(const ProducerOptions& options, StopSignal& stop,
                   ProducerCounters& counters, std::ostream& ready_out);

}  // namespace sluice

#endif  // SLUICE_PRODUCER_PRODUCER_H_
