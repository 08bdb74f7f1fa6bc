// common/frame_io.h
//
// The edges of a process: FrameReceiver (PULL socket -> decode -> runs, one
// run per frame, for a thread that does other work between receives, as
// the sink's does), BatchSender (items -> batch frames -> PUSH socket) and
// SendLoop (a BatchSender fed by a bounded queue of runs). Each owns its
// socket for the duration. Runs go back to a RunPool once used, so that
// their storage is reused.
//
// Backpressure: a FrameReceiver's thread reads only when it asks, so the
// socket fills and the sender upstream meets its high-water mark. Sending
// blocks when every peer is at its high-water mark.
//
// Wire input is untrusted: each rejected frame is counted by reason, logged
// (one rate-limited line), dropped, and receiving goes on.
#ifndef SLUICE_COMMON_FRAME_IO_H_
#define SLUICE_COMMON_FRAME_IO_H_

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include <zmq.hpp>

#include "common/bounded_queue.h"
#include "common/counters.h"
#include "common/envelope_codec.h"
#include "common/item.h"
#include "common/log.h"
#include "common/run.h"
#include "common/status.h"
#include "common/stop_signal.h"

namespace sluice {

struct ReceiveCounters {
  Counter rx_frames;          // Frames accepted.
  Counter rx_items;           // Data items in accepted frames.
  Counter rx_end_of_stream;   // End-of-stream markers accepted.
  Counter rx_bytes;           // Bytes of accepted frames.
  RejectCounters rejected;    // Frames dropped, by reason.
  void AppendTo(nlohmann::json& out) const;
};

struct ReceiveOptions {
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Return kIdle after this long without an accepted frame. nullopt: never.
  std::optional<std::chrono::milliseconds> idle_timeout;
};

enum class ReceiveEnd {
  kStopped,  // `stop` was requested.
  kIdle,     // No accepted frame for idle_timeout.
};

// Receives frames into runs when asked. Not thread-safe: one thread owns it
// and the socket.
class FrameReceiver {
 public:
  FrameReceiver(zmq::socket_t& socket, const StopSignal& stop,
                const ReceiveOptions& options, ReceiveCounters& counters)
      : socket_(socket), stop_(stop), options_(options), counters_(counters) {}

  // Waits for a frame until `until` (nullopt: no limit but the idle
  // timeout), then takes what else has already arrived, up to `max_frames`
  // frames in all, without waiting. Each accepted frame becomes a run from
  // `pool`, appended to `runs`. nullopt: go on (with no run if `until`
  // passed or every frame was refused); otherwise why receiving has ended
  // (never with runs appended by this call).
  StatusOr<std::optional<ReceiveEnd>> Receive(
      std::vector<ItemRun>& runs, RunPool& pool, size_t max_frames,
      std::optional<std::chrono::steady_clock::time_point> until);

 private:
  zmq::socket_t& socket_;
  const StopSignal& stop_;
  const ReceiveOptions options_;
  ReceiveCounters& counters_;
  RateLimitedLog reject_log_{"rx.reject", std::chrono::seconds(1)};
  zmq::message_t frame_;
  std::chrono::steady_clock::time_point last_accepted_ = std::chrono::steady_clock::now();
};

// Decodes `frame` into `run` (appending) and counts it; a rejected frame is
// counted by reason, logged through `log` and leaves `run` unchanged.
// Returns whether the frame was accepted.
bool AcceptFrame(const zmq::message_t& frame, size_t max_frame_bytes, ItemRun& run,
                 ReceiveCounters& counters, RateLimitedLog& log);

struct SendCounters {
  Counter tx_frames;
  Counter tx_items;
  Counter tx_end_of_stream;
  Counter tx_bytes;
  // Microseconds spent waiting for a peer to take a frame (every peer at
  // its high-water mark, or none connected): a stage whose output blocks
  // is faster than what follows it.
  Counter tx_blocked_us;
  void AppendTo(nlohmann::json& out) const;
};

struct SendOptions {
  size_t batch_items = 128;        // Most items per frame.
  size_t batch_bytes = 64 * 1024;  // A frame is cut once it holds this much.
  // Once `stop` is requested, how long the loop may still take to send what
  // reaches `queue` before it gives up.
  std::chrono::milliseconds drain_timeout{30000};
};

// Cuts `items` into frames: a run of data items becomes frames of at most
// options.batch_items items / about options.batch_bytes bytes; each
// end-of-stream gets a frame of its own, in order. Calls
// emit(frame, data_items, is_end_of_stream) -> Status for each frame and
// stops at the first error.
template <typename Emit>
Status PackFrames(std::span<const Item* const> items, const SendOptions& options,
                  FrameEncoder& encoder, Emit&& emit) {
  size_t begin = 0;
  size_t bytes = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i]->end_of_stream) {
      if (i > begin) {
        Status s = emit(encoder.EncodeBatch(items.subspan(begin, i - begin)),
                        i - begin, false);
        if (!s.ok()) return s;
      }
      Status s = emit(encoder.EncodeEndOfStream(*items[i]), 0, true);
      if (!s.ok()) return s;
      begin = i + 1;
      bytes = 0;
      continue;
    }
    bytes += ApproxEncodedBytes(*items[i]);
    const size_t run = i + 1 - begin;
    if (bytes >= options.batch_bytes || run == options.batch_items ||
        i + 1 == items.size()) {
      Status s = emit(encoder.EncodeBatch(items.subspan(begin, run)), run, false);
      if (!s.ok()) return s;
      begin = i + 1;
      bytes = 0;
    }
  }
  return Status::Ok();
}

// Packs items into frames and sends them on one socket: a run of data items
// becomes frames of at most batch_items / batch_bytes; each end-of-stream
// goes in a frame of its own, in order. Blocks while peers are at their
// high-water mark. Once `stop` is requested, sends are bounded by the drain
// timeout; what misses it is counted in unsent().
class BatchSender {
 public:
  BatchSender(zmq::socket_t& socket, const StopSignal& stop,
              const SendOptions& options, SendCounters& counters)
      : socket_(socket), stop_(stop), options_(options), counters_(counters) {}

  // Sends `items`, in order. Fails on a socket error, or with kIncomplete
  // if a give-up time is set and passes while no peer takes a frame.
  Status Send(std::span<const Item* const> items);
  Status Send(std::span<const Item> items);
  Status Send(std::span<const ItemRun> runs);
  // A moment after which a blocked send gives up (nullopt: never).
  void set_give_up(std::optional<std::chrono::steady_clock::time_point> at) {
    give_up_ = at;
  }
  // Items and end-of-stream markers that missed the drain deadline.
  uint64_t unsent() const { return unsent_; }
  // Caps frames at `n` items below options.batch_items (0: no cap): a
  // sender spreading work over workers by round-robin keeps frames small
  // when it has few items in flight per worker.
  void set_frame_items(size_t n) { frame_items_ = n; }

 private:
  Status SendFrame(zmq::message_t frame, uint64_t n_items, bool end);

  zmq::socket_t& socket_;
  const StopSignal& stop_;
  const SendOptions& options_;
  SendCounters& counters_;
  FrameEncoder encoder_;
  std::vector<const Item*> gather_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::optional<std::chrono::steady_clock::time_point> give_up_;
  uint64_t unsent_ = 0;
  size_t frame_items_ = 0;
};

// Sends everything that comes through `queue` until the queue is closed and
// drained: packs whatever is already queued (up to the caps) into one frame
// and sends it at once; end-of-stream markers go in frames of their own, in
// queue order. Sent runs go back to `pool`. Returns OK when drained;
// kUnavailable if the drain deadline passed after a stop with items still
// unsent (the message says how many).
Status SendLoop(zmq::socket_t& socket, const StopSignal& stop,
                const SendOptions& options, BoundedQueue<ItemRun>& queue,
                RunPool& pool, SendCounters& counters);

// Capacity in runs of a queue meant to hold about `items` items in runs of
// up to `run_items`.
inline size_t RunCapacity(size_t items, size_t run_items) {
  const size_t runs = (items + run_items - 1) / (run_items == 0 ? 1 : run_items);
  return runs < 2 ? 2 : runs;
}

}  // namespace sluice

#endif  // SLUICE_COMMON_FRAME_IO_H_
