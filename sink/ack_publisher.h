// sink/ack_publisher.h
//
// Collects what the sink has taken, per stream, and publishes it to the
// producers as batched acks on a PUB socket: a stream's pending acks go out
// once `batch_items` have gathered or the oldest has waited `interval`,
// whichever comes first; completion goes out at once. Duplicates are acked
// again (a duplicate means the producer missed an earlier ack).
//
// Callers flush the output before Publish(), so an ack never runs ahead of
// what was handed to the operating system.
//
// The socket is an XPUB, so the sink sees producers subscribe: a producer
// that subscribes to a stream already complete (its subscription raced the
// items, or it reconnected) gets the "complete" ack at once, and before
// exiting the sink waits, briefly, for the subscribers of its complete
// streams, so that no producer is left waiting for an ack that went to
// nobody.
//
// Thread safety: none; owned by the sink's accounting thread, which also
// owns the socket.
#ifndef SLUICE_SINK_ACK_PUBLISHER_H_
#define SLUICE_SINK_ACK_PUBLISHER_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "common/counters.h"
#include "common/envelope_codec.h"
#include "common/status.h"

namespace sluice {

struct AckOptions {
  size_t batch_items = 1024;
  std::chrono::milliseconds interval{20};
};

class AckPublisher {
 public:
  using Clock = std::chrono::steady_clock;
  // `socket` may be null: then everything is a no-op (acks off).
  AckPublisher(zmq::socket_t* socket, const AckOptions& options,
               Counter& acks_sent)
      : socket_(socket), options_(options), acks_sent_(acks_sent) {}

  void Taken(const std::string& stream, uint64_t seq, Clock::time_point now);
  void EndOfStreamTaken(const std::string& stream, Clock::time_point now);
  void Completed(const std::string& stream, Clock::time_point now);

  // True if some stream's acks are due at `now`.
  bool Due(Clock::time_point now) const;
  // When the next ack falls due, if any is pending.
  std::optional<Clock::time_point> NextDue() const;
  // Publishes the acks that are due (all pending ones with `all`).
  Status Publish(Clock::time_point now, bool all);
  // Reads the subscriptions that arrived, without waiting; a subscriber of
  // a complete stream gets its "complete" ack.
  Status ReadSubscriptions(Clock::time_point now);
  // Waits until every complete stream has had a subscriber, or `deadline`;
  // publishes their "complete" acks. Returns the streams that had none.
  StatusOr<std::vector<std::string>> AwaitSubscribers(Clock::time_point deadline);

 private:
  struct Pending {
    std::vector<uint64_t> seqs;
    bool end_of_stream = false;
    bool complete = false;
    bool urgent = false;
    std::optional<Clock::time_point> since;
  };
  Pending& Touch(const std::string& stream, Clock::time_point now);
  bool IsDue(const Pending& p, Clock::time_point now) const;

  zmq::socket_t* socket_;
  const AckOptions options_;
  Counter& acks_sent_;
  FrameEncoder encoder_;
  std::unordered_map<std::string, Pending> pending_;
  std::unordered_map<std::string, bool> complete_;  // Stream -> subscribed.
  std::unordered_map<std::string, bool> subscribed_;
};

}  // namespace sluice

#endif  // SLUICE_SINK_ACK_PUBLISHER_H_
