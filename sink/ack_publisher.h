// sink/ack_publisher.h
//
// Collects what the sink has taken, per stream, and publishes it to the
// producers as batched acks on a PUB socket: a stream's pending acks go out
// once `batch_items` have gathered or the oldest has waited `interval`,
// whichever comes first; completion goes out at once. Duplicates are acked
// again (a duplicate means the producer missed an earlier ack, or resent an
// item before its first copy arrived) and counted in the ack. Each ack also
// sums what its new items said of their time in stages (Item::queued_us,
// op_us), which the producer's flow control reads.
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
// Producers' hellos (HelloTopic in common/envelope_codec.h) arrive as
// subscriptions too. The first live epoch of a stream holds it; a hello of
// another epoch while it is connected is answered REJECTED; a hello of the
// holder is answered WELCOME with what the sink already holds of the stream
// (from `describe`, after the caller's commit), so that a restarted producer
// sends only the rest. A holder's disconnect (libzmq's unsubscription) frees
// the stream.
//
// The socket runs in XPUB_MANUAL mode: a subscription takes effect only
// once ReadSubscriptions() has checked it (an ack topic or a hello of a
// valid stream id) and counted it against `max_topics`, so a peer cannot
// grow libzmq's subscription trie, or our maps, without bound.
//
// Thread safety: none; owned by the sink's thread, which also
// owns the socket.
#ifndef SLUICE_SINK_ACK_PUBLISHER_H_
#define SLUICE_SINK_ACK_PUBLISHER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "common/counters.h"
#include "common/envelope_codec.h"
#include "common/log.h"
#include "common/status.h"

namespace sluice {

struct AckOptions {
  size_t batch_items = 1024;
  std::chrono::milliseconds interval{20};
  size_t max_topics = 4096;  // Distinct subscriptions applied at once.
};

struct AckCounters {
  Counter acks_sent;              // Ack frames published.
  Counter hellos;                 // Producers' hellos answered WELCOME.
  Counter hellos_rejected;        // ... answered REJECTED.
  Counter rejected_subscriptions;  // Not ours, malformed, or over the cap.
};

class AckPublisher {
 public:
  using Clock = std::chrono::steady_clock;
  // Fills `ack` (ranges, end_of_stream, complete) with what the sink holds
  // of `stream`, as committed.
  using Describe = std::function<void(const std::string& stream, AckMessage& ack)>;
  // `socket` may be null: then everything is a no-op (acks off).
  AckPublisher(zmq::socket_t* socket, const AckOptions& options,
               AckCounters& counters, Describe describe = nullptr)
      : socket_(socket),
        options_(options),
        counters_(counters),
        describe_(std::move(describe)) {}

  bool enabled() const { return socket_ != nullptr; }
  // A new item taken; `queued_us` and `op_us` are its Item fields, summed
  // into the ack for the producer's flow control.
  void Taken(const std::string& stream, uint64_t seq, uint32_t queued_us,
             uint32_t op_us, Clock::time_point now);
  // A duplicate: acked again (its ack was lost, or it was resent before its
  // first copy arrived) and counted in the ack, so that the producer learns
  // of a needless resend.
  void Duplicate(const std::string& stream, uint64_t seq, Clock::time_point now);
  void EndOfStreamTaken(const std::string& stream, Clock::time_point now);
  void Completed(const std::string& stream, Clock::time_point now);

  // True if some stream's acks (or a hello's answer) are due at `now`.
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
    uint64_t queued_us = 0, op_us = 0, timed_items = 0, duplicates = 0;
    bool end_of_stream = false;
    bool complete = false;
    bool urgent = false;
    std::optional<Clock::time_point> since;
  };
  Pending& Touch(const std::string& stream, Clock::time_point now);
  bool IsDue(const Pending& p, Clock::time_point now) const;
  Status Send(AckMessage& ack);
  // Applies a checked (un)subscription to the pipe it came from.
  Status Apply(bool subscribe, const std::string& topic);
  void Hello(const std::string& stream, uint64_t epoch);
  Status Answer(const std::string& stream, uint64_t epoch, HelloAnswer answer);

  zmq::socket_t* socket_;
  const AckOptions options_;
  AckCounters& counters_;
  Describe describe_;
  FrameEncoder encoder_;
  std::unordered_map<std::string, Pending> pending_;  // Never erased.
  const std::string* last_stream_ = nullptr;  // The entry Touch() found last.
  Pending* last_ = nullptr;
  std::unordered_map<std::string, bool> complete_;  // Stream -> subscribed.
  std::unordered_map<std::string, bool> subscribed_;
  std::unordered_map<std::string, uint64_t> topics_;  // Applied, refcounted.
  std::unordered_map<std::string, uint64_t> holder_;  // Stream -> live epoch.
  struct Hail {
    std::string stream;
    uint64_t epoch;
    HelloAnswer answer;
  };
  std::vector<Hail> answers_;  // Hellos to answer at the next Publish().
  // Streams whose DoneTopic to publish at the next Publish().
  std::vector<std::string> done_;
  RateLimitedLog reject_log_{"acks.subscription", std::chrono::seconds(1)};
  RateLimitedLog hello_log_{"acks.hello", std::chrono::seconds(1)};
};

}  // namespace sluice

#endif  // SLUICE_SINK_ACK_PUBLISHER_H_
