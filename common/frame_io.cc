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

Status BatchSender::SendFrame(zmq::message_t frame, uint64_t n_items,
                              bool end) {
  const uint64_t count = n_items + (end ? 1 : 0);
  if (unsent_ > 0) {  // Past the drain deadline: count, don't wait again.
    unsent_ += count;
    return Status::Ok();
  }
  const size_t bytes = frame.size();
  while (true) {
    if (!deadline_ && stop_.requested()) {
      deadline_ = std::chrono::steady_clock::now() + options_.drain_timeout;
    }
    std::optional<std::chrono::steady_clock::time_point> until = deadline_;
    const bool give_up_first = give_up_ && (!until || *give_up_ < *until);
    if (give_up_first) until = give_up_;
    StatusOr<WaitOutcome> sent = sluice::SendFrame(
        socket_, frame, deadline_ ? -1 : stop_.fd(), until);
    if (!sent.ok()) return sent.status();
    if (*sent == WaitOutcome::kReady) break;
    if (*sent == WaitOutcome::kTimedOut && give_up_first) {
      return Incomplete("no peer downstream took a frame until the give-up "
                        "time: is anything connected to the output?");
    }
    if (*sent == WaitOutcome::kTimedOut) {
      unsent_ += count;
      return Status::Ok();
    }
    // kStopped: loop to start the drain deadline.
  }
  counters_.tx_frames.Add();
  counters_.tx_bytes.Add(bytes);
  if (end) {
    counters_.tx_end_of_stream.Add();
  } else {
    counters_.tx_items.Add(n_items);
  }
  return Status::Ok();
}

Status BatchSender::Send(std::span<Item> items) {
  size_t begin = 0;
  size_t bytes = 0;
  size_t run = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].end_of_stream) {
      if (run > 0) {
        Status s = SendFrame(encoder_.EncodeBatch(items.subspan(begin, run)),
                             run, false);
        if (!s.ok()) return s;
      }
      Status s = SendFrame(encoder_.EncodeEndOfStream(items[i]), 0, true);
      if (!s.ok()) return s;
      begin = i + 1;
      bytes = 0;
      run = 0;
      continue;
    }
    bytes += ApproxEncodedBytes(items[i]);
    ++run;
    if (bytes >= options_.batch_bytes || run == options_.batch_items ||
        i + 1 == items.size()) {
      Status s = SendFrame(encoder_.EncodeBatch(items.subspan(begin, run)),
                           run, false);
      if (!s.ok()) return s;
      begin = i + 1;
      bytes = 0;
      run = 0;
    }
  }
  return Status::Ok();
}

Status SendLoop(zmq::socket_t& socket, const StopSignal& stop,
                const SendOptions& options, BoundedQueue<Item>& queue,
                SendCounters& counters) {
  BatchSender sender(socket, stop, options, counters);
  std::vector<Item> items;
  while (true) {
    items.clear();
    if (queue.PopUpTo(options.batch_items, items) == 0) break;
    Status s = sender.Send(items);
    if (!s.ok()) return s;
  }
  if (sender.unsent() > 0) {
    return Unavailable(std::to_string(sender.unsent()) +
                       " items and end-of-stream markers could not be sent "
                       "within the drain timeout: nobody downstream took them");
  }
  return Status::Ok();
}

}  // namespace sluice
