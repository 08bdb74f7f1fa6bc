#include "common/frame_io.h"

#include <algorithm>
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
  out["tx_blocked_us"] = tx_blocked_us.value();
}

bool AcceptFrame(const zmq::message_t& frame, size_t max_frame_bytes, ItemRun& run,
                 ReceiveCounters& counters, RateLimitedLog& log) {
  const size_t before = run.size();
  std::optional<RejectReason> reject =
      DecodeFrame(frame.data(), frame.size(), max_frame_bytes, run);
  if (reject) {
    counters.rejected.Count(*reject);
    log.Warn("dropped a " + std::to_string(frame.size()) +
             "-byte frame: " + std::string(RejectReasonName(*reject)));
    return false;
  }
  counters.rx_frames.Add();
  counters.rx_bytes.Add(frame.size());
  if (run.size() == before + 1 && run[before].end_of_stream) {
    counters.rx_end_of_stream.Add();
  } else {
    counters.rx_items.Add(run.size() - before);
  }
  return true;
}

StatusOr<std::optional<ReceiveEnd>> FrameReceiver::Receive(
    std::vector<ItemRun>& runs, RunPool& pool, size_t max_frames,
    std::optional<std::chrono::steady_clock::time_point> until) {
  using std::chrono::milliseconds;
  using Ended = std::optional<ReceiveEnd>;
  if (stop_.requested()) return Ended(ReceiveEnd::kStopped);
  const auto now = std::chrono::steady_clock::now();
  std::optional<milliseconds> wait;
  if (options_.idle_timeout) {
    const auto left = *options_.idle_timeout -
                      std::chrono::duration_cast<milliseconds>(now - last_accepted_);
    if (left.count() <= 0) return Ended(ReceiveEnd::kIdle);
    wait = left;
  }
  if (until) {
    const auto due = std::max(milliseconds(0),
                              std::chrono::ceil<milliseconds>(*until - now));
    if (!wait || due < *wait) wait = due;
  }
  for (size_t i = 0; i < max_frames; ++i) {
    StatusOr<WaitOutcome> got =
        ReceiveFrame(socket_, stop_.fd(), i == 0 ? wait : milliseconds(0), frame_);
    if (!got.ok()) return got.status();
    if (*got == WaitOutcome::kStopped && i == 0) return Ended(ReceiveEnd::kStopped);
    if (*got != WaitOutcome::kReady) break;  // The next call sees a stop.
    ItemRun run = pool.Get();
    if (AcceptFrame(frame_, options_.max_frame_bytes, run, counters_, reject_log_)) {
      last_accepted_ = std::chrono::steady_clock::now();
      runs.push_back(std::move(run));
    } else {
      pool.Put(std::move(run));
    }
  }
  return Ended();
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
    std::chrono::nanoseconds blocked{0};
    StatusOr<WaitOutcome> sent = sluice::SendFrame(
        socket_, frame, deadline_ ? -1 : stop_.fd(), until, &blocked);
    if (blocked.count() > 0) {
      counters_.tx_blocked_us.Add(static_cast<uint64_t>(blocked.count() / 1000));
    }
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

Status BatchSender::Send(std::span<const Item* const> items) {
  SendOptions options = options_;
  if (frame_items_ > 0) options.batch_items = std::min(options.batch_items, frame_items_);
  return PackFrames(items, options, encoder_,
                    [&](zmq::message_t frame, size_t n_items, bool end) {
                      return SendFrame(std::move(frame), n_items, end);
                    });
}

Status BatchSender::Send(std::span<const Item> items) {
  gather_.clear();
  for (const Item& item : items) gather_.push_back(&item);
  return Send(std::span<const Item* const>(gather_));
}

Status BatchSender::Send(std::span<const ItemRun> runs) {
  gather_.clear();
  for (const ItemRun& run : runs) {
    for (const Item& item : run) gather_.push_back(&item);
  }
  return Send(std::span<const Item* const>(gather_));
}

Status SendLoop(zmq::socket_t& socket, const StopSignal& stop,
                const SendOptions& options, BoundedQueue<ItemRun>& queue,
                RunPool& pool, SendCounters& counters) {
  BatchSender sender(socket, stop, options, counters);
  std::vector<ItemRun> runs;
  while (true) {
    runs.clear();
    if (queue.PopUpTo(options.batch_items, runs) == 0) break;
    Status s = sender.Send(std::span<const ItemRun>(runs));
    for (ItemRun& run : runs) pool.Put(std::move(run));
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
