#include "common/frame_io.h"

#include <span>
#include <string>
#include <vector>

#include "common/envelope_codec.h"
#include "common/log.h"
#include "common/socket.h"

namespace sluice {

void ReceiveCounters::AppendTo(nlohmann::json& out) const {
  out["rx_frames"] = rx_frames.value();
  out["rx_items"] = rx_items.value();
  out["rx_end_of_stream"] = rx_end_of_stream.value();
  out["rx_bytes"] = rx_bytes.value();
  rejected.AppendTo(out);
}

void SendCounters::AppendTo(nlohmann::json& out) const {
  out["tx_frames"] = tx_frames.value();
  out["tx_items"] = tx_items.value();
  out["tx_end_of_stream"] = tx_end_of_stream.value();
  out["tx_bytes"] = tx_bytes.value();
}

StatusOr<ReceiveEnd> ReceiveLoop(zmq::socket_t& socket, const StopSignal& stop,
                                 const ReceiveOptions& options,
                                 BoundedQueue<Item>& queue,
                                 ReceiveCounters& counters) {
  RateLimitedLog reject_log("rx.reject", std::chrono::seconds(1));
  zmq::message_t frame;
  std::vector<Item> items;
  auto last_accepted = std::chrono::steady_clock::now();
  while (!stop.requested()) {
    std::optional<std::chrono::milliseconds> wait;
    if (options.idle_timeout) {
      auto left = *options.idle_timeout -
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - last_accepted);
      if (left.count() <= 0) return ReceiveEnd::kIdle;
      wait = left;
    }
    StatusOr<WaitOutcome> got = ReceiveFrame(socket, stop.fd(), wait, frame);
    if (!got.ok()) return got.status();
    if (*got == WaitOutcome::kStopped) return ReceiveEnd::kStopped;
    if (*got == WaitOutcome::kTimedOut) continue;  // Re-checks the idle time.

    items.clear();
    std::optional<RejectReason> reject = DecodeFrame(
        frame.data(), frame.size(), options.max_frame_bytes, items);
    if (reject) {
      counters.rejected.Count(*reject);
      reject_log.Warn("dropped a " + std::to_string(frame.size()) +
                      "-byte frame: " + std::string(RejectReasonName(*reject)));
      continue;
    }
    last_accepted = std::chrono::steady_clock::now();
    counters.rx_frames.Add();
    counters.rx_bytes.Add(frame.size());
    if (items.size() == 1 && items[0].end_of_stream) {
      counters.rx_end_of_stream.Add();
    } else {
      counters.rx_items.Add(items.size());
    }
    if (queue.PushAll(items) < items.size()) return ReceiveEnd::kQueueClosed;
  }
  return ReceiveEnd::kStopped;
}

namespace {

// Sends one frame, switching to the drain deadline once a stop is seen.
// Returns false if the deadline passed (the frame is then unsent).
StatusOr<bool> SendWithDrain(
    zmq::socket_t& socket, zmq::message_t& frame, const StopSignal& stop,
    const SendOptions& options,
    std::optional<std::chrono::steady_clock::time_point>& deadline) {
  while (true) {
    if (!deadline && stop.requested()) {
      deadline = std::chrono::steady_clock::now() + options.drain_timeout;
    }
    StatusOr<WaitOutcome> sent =
        SendFrame(socket, frame, deadline ? -1 : stop.fd(), deadline);
    if (!sent.ok()) return sent.status();
    if (*sent == WaitOutcome::kReady) return true;
    if (*sent == WaitOutcome::kTimedOut) return false;
    // kStopped: loop to start the drain deadline.
  }
}

}  // namespace

Status SendLoop(zmq::socket_t& socket, const StopSignal& stop,
                const SendOptions& options, BoundedQueue<Item>& queue,
                SendCounters& counters) {
  FrameEncoder encoder;
  std::vector<Item> items;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  uint64_t unsent = 0;
  auto send = [&](zmq::message_t frame, uint64_t n_items,
                  bool end) -> Status {
    if (unsent > 0) {  // Past the deadline: count, don't wait again.
      unsent += n_items + (end ? 1 : 0);
      return Status::Ok();
    }
    size_t bytes = frame.size();
    StatusOr<bool> sent = SendWithDrain(socket, frame, stop, options, deadline);
    if (!sent.ok()) return sent.status();
    if (!*sent) {
      unsent += n_items + (end ? 1 : 0);
      return Status::Ok();
    }
    counters.tx_frames.Add();
    counters.tx_bytes.Add(bytes);
    if (end) {
      counters.tx_end_of_stream.Add();
    } else {
      counters.tx_items.Add(n_items);
    }
    return Status::Ok();
  };

  while (true) {
    items.clear();
    if (queue.PopUpTo(options.batch_items, items) == 0) break;
    size_t begin = 0;
    size_t bytes = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].end_of_stream) {
        if (i > begin) {
          Status s = send(encoder.EncodeBatch(std::span(items).subspan(
                              begin, i - begin)),
                          i - begin, false);
          if (!s.ok()) return s;
        }
        Status s = send(encoder.EncodeEndOfStream(items[i]), 0, true);
        if (!s.ok()) return s;
        begin = i + 1;
        bytes = 0;
        continue;
      }
      bytes += ApproxEncodedBytes(items[i]);
      if (bytes >= options.batch_bytes || i + 1 == items.size()) {
        Status s = send(encoder.EncodeBatch(std::span(items).subspan(
                            begin, i + 1 - begin)),
                        i + 1 - begin, false);
        if (!s.ok()) return s;
        begin = i + 1;
        bytes = 0;
      }
    }
  }
  if (unsent > 0) {
    return Unavailable(std::to_string(unsent) +
                       " items and end-of-stream markers could not be sent "
                       "within the drain timeout: nobody downstream took them");
  }
  return Status::Ok();
}

}  // namespace sluice
