// producer/producer.h
//
// The producer emits one stream: items with sequence numbers 0..N-1, then its
// end-of-stream.
//
// With acks (the default), the caller's thread counts or reads the lines of
// a file/stdin and sends them itself (it owns the PUSH socket), so that an
// item read from a quiet input leaves without a hand-off between threads.
// It keeps every sent item in an InflightWindow until it is acknowledged,
// and while the input is quiet its poll wakes for the resends that are due.
// A second thread owns a SUB socket subscribed to the sink's acks for this
// stream and applies them to the window. A full window, or a slow
// downstream that fills the socket's high-water mark, blocks the reading:
// the producer never drops and never grows. The run succeeds only once
// every item and the end-of-stream are acknowledged; after `give_up`
// without progress it fails (kIncomplete).
//
// With --acks off, two threads joined by a bounded queue:
//
//   read thread --queue--> send thread (the caller's; owns the PUSH socket,
//   batches what is queued)
//
// and, once the stream is complete, the frames libzmq still queues (the
// only copy of the stream's tail) are flushed without a time bound, for as
// long as a connected peer has frames to take; --linger-ms bounds the flush
// only after a stop or a failure.
//
// On a stop request the reading stops, the end-of-stream carries
// the number of items actually emitted, and everything is still sent (and,
// with acks, acknowledged within `stop_grace`; what is not is reported, and
// the same command resumes it).
//
// Stream identity: each run is an instance (a random nonzero epoch) of its
// stream id. With acks, before sending, the producer says hello to the sink
// (HelloTopic) and waits for the answer: REJECTED if another live instance
// produces the stream (kUnavailable: nothing is sent), or WELCOME with what
// the sink already holds of the stream, which this run then skips: a
// restarted producer sends only the rest, and one whose stream is already
// complete exits at once.
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
  size_t window = 40000;             // Most unacknowledged items.
  size_t window_bytes = size_t{64} << 20;  // ... and payload bytes.
  std::chrono::milliseconds give_up{60000};  // Without ack progress.
  RetransmitOptions retransmit;
  uint64_t epoch = 1;                // This instance; see NewEpoch().
  // Longest item (input line); a longer line becomes a failed item
  // (reason item_too_large) that keeps its place in the stream.
  size_t max_item_bytes = kDefaultMaxFrameBytes - 1024;
  // After a stop request, how long to wait for the last acks.
  std::chrono::milliseconds stop_grace{3000};
  // How long to wait for the sink's answer to the hello.
  std::chrono::milliseconds hello_timeout{5000};
};

struct ProducerCounters {
  Counter emitted;       // Items handed to the sending side (queue or window).
  Counter acked;         // Entries released by acks (items + end-of-stream).
  Counter ack_frames;    // Ack frames accepted.
  Counter retransmits;   // Items and end-of-stream markers sent again.
  Counter resumed;       // Items not sent: the sink already had them.
  Counter too_large;     // Input lines over max_item_bytes, sent as failed.
  // Resends the sink reported as duplicates (needless: the item was not
  // lost), and, as gauges, the flow limit (most items in flight now) and
  // the mean wait of items in stages (microseconds), as the acks tell.
  Counter duplicates_reported;
  Counter flow_limit;
  Counter stage_wait_us;
  Counter window_items;  // Gauge: entries sent and not yet acknowledged.
  Counter curve_refused;  // CURVE clients refused (not in --curve-allow).
  Counter handshake_failed;  // Handshakes that failed (see the log for why).
  RejectCounters ack_rejected;
  SendCounters send;
  nlohmann::json ToJson() const;
};

// A random 12-character id (fits std::string's small buffer).
std::string NewStreamId();
// The default stream id for --input FILE: stable for that file (its path,
// size, modification time and inode), so a restart resumes the same stream
// while an edited file is a new one. "f" and 15 hex digits.
StatusOr<std::string> StreamIdForFile(const std::string& path);
// A random nonzero instance number.
uint64_t NewEpoch();

// Binds/connects, prints "READY out=<addresses> stream=<id> epoch=<n>" on
// `ready_out`, emits the stream and returns once every frame was handed to
// the network (with acks: acknowledged).
// kInvalidArgument for an input that cannot be opened (before READY),
// kUnavailable if an address cannot be bound, frames could not be flushed or
// (with acks) the sink's ack socket never answered or another live producer
// holds the stream, kIncomplete if acks stopped coming (or nothing
// downstream took a frame) for `give_up` with items outstanding, or if a
// stop left items unacknowledged after `stop_grace`; kCancelled if stopped
// before anything was sent.
Status RunProducer(const ProducerOptions& options, StopSignal& stop,
                   ProducerCounters& counters, std::ostream& ready_out);

}  // namespace sluice

#endif  // SLUICE_PRODUCER_PRODUCER_H_
