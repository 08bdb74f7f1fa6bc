#include "producer/producer.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include "common/bounded_queue.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/socket.h"

namespace sluice {
namespace {

// Emits items in runs of this many per queue lock.
constexpr size_t kEmitRun = 64;

// Produces the items of one stream into a queue; runs on the read thread.
class Emitter {
 public:
  Emitter(const ProducerOptions& options, const StopSignal& stop,
          BoundedQueue<Item>& queue, ProducerCounters& counters)
      : options_(options), stop_(stop), queue_(queue), counters_(counters) {}

  // Emits the stream; on success (or a stop) ends it with its end-of-stream.
  // Closes the queue in every case.
  Status Run() {
    Status status = options_.input ? EmitLines() : EmitCount();
    if (status.ok() || status.code() == StatusCode::kCancelled) {
      if (!Flush() || !queue_.Push(Item::EndOfStream(options_.stream, next_))) {
        status = Internal("queue closed before the end-of-stream");
      }
    }
    queue_.Close();
    return status;
  }

 private:
  bool Emit(std::string payload) {
    Item& item = run_.emplace_back();
    item.stream = options_.stream;
    item.seq = next_++;
    item.payload = std::move(payload);
    item.produced_at_us = WallMicros();
    return run_.size() < kEmitRun || Flush();
  }

  bool Flush() {
    size_t pushed = queue_.PushAll(run_);
    counters_.emitted.Add(pushed);
    bool ok = pushed == run_.size();
    run_.clear();
    return ok;
  }

  Status EmitCount() {
    for (uint64_t i = 0; i < options_.count; ++i) {
      if (stop_.requested()) return Cancelled("stopped");
      if (!Emit(std::to_string(i))) return Internal("queue closed");
    }
    return Status::Ok();
  }

  // Reads with poll() on the input and the stop fd, so that a stop request
  // interrupts a read from a quiet stdin.
  Status EmitLines() {
    const std::string& path = *options_.input;
    int fd = path == "-" ? STDIN_FILENO : open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return InvalidArgument("cannot open --input '" + path +
                             "': " + std::strerror(errno));
    }
    Status status = ReadLines(fd);
    if (fd != STDIN_FILENO) close(fd);
    return status;
  }

  Status ReadLines(int fd) {
    // Keeps every item decodable by receivers with default limits.
    const size_t max_line = kDefaultMaxFrameBytes - 1024;
    std::string line;
    char buffer[1 << 16];
    uint64_t line_number = 0;
    while (true) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {stop_.fd(), POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return Internal(std::string("poll on --input: ") + std::strerror(errno));
      }
      if (fds[1].revents & POLLIN) return Cancelled("stopped");
      ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return InvalidArgument("reading --input '" + *options_.input +
                               "': " + std::strerror(errno));
      }
      if (n == 0) break;
      const char* p = buffer;
      const char* end = buffer + n;
      while (p < end) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', end - p));
        line.append(p, nl ? nl : end);
        if (line.size() > max_line) {
          return InvalidArgument(
              "line " + std::to_string(line_number + 1) + " of --input '" +
              *options_.input + "' is longer than " + std::to_string(max_line) +
              " bytes, the most one item may carry");
        }
        if (!nl) break;
        ++line_number;
        if (!Emit(std::move(line))) return Internal("queue closed");
        line.clear();
        p = nl + 1;
      }
    }
    if (!line.empty()) {  // Last line without a newline.
      if (!Emit(std::move(line))) return Internal("queue closed");
    }
    return Status::Ok();
  }

  const ProducerOptions& options_;
  const StopSignal& stop_;
  BoundedQueue<Item>& queue_;
  ProducerCounters& counters_;
  std::vector<Item> run_;
  uint64_t next_ = 0;
};

// Receives the sink's acks for one stream and applies them to the window.
// Runs on its own thread, which owns the SUB socket, until `done`.
Status AckLoop(zmq::socket_t& socket, const StopSignal& done,
               size_t max_frame_bytes, InflightWindow& window,
               ProducerCounters& counters) {
  RateLimitedLog reject_log("ack.reject", std::chrono::seconds(1));
  zmq::message_t frame;
  AckMessage ack;
  while (true) {
    StatusOr<WaitOutcome> got = ReceiveFrame(socket, done.fd(), std::nullopt, frame);
    if (!got.ok()) return got.status();
    if (*got != WaitOutcome::kReady) return Status::Ok();
    if (auto reject = DecodeAck(frame.data(), frame.size(), max_frame_bytes, ack)) {
      counters.ack_rejected.Count(*reject);
      reject_log.Warn("dropped a " + std::to_string(frame.size()) +
                      "-byte ack frame: " + std::string(RejectReasonName(*reject)));
      continue;
    }
    counters.ack_frames.Add();
    counters.acked.Add(window.Ack(ack, InflightWindow::Clock::now()));
  }
}

// The send loop of the reliable mode: new items while the window has room,
// resends of what timed out, and once the input is done, waiting for the
// last acks.
Status ReliableSendLoop(zmq::socket_t& socket, const StopSignal& stop,
                        const ProducerOptions& options, BoundedQueue<Item>& queue,
                        InflightWindow& window, ProducerCounters& counters) {
  using Clock = InflightWindow::Clock;
  BatchSender sender(socket, stop, options.flags.send, counters.send);
  const size_t batch = options.flags.send.batch_items;
  std::vector<Item> items;
  bool input_done = false;
  while (true) {
    Clock::time_point now = Clock::now();
    items.clear();
    if (size_t n = window.TakeExpired(now, batch, items); n > 0) {
      counters.retransmits.Add(n);
      Status s = sender.Send(items);
      if (!s.ok()) return s;
      continue;
    }
    if (input_done && window.empty()) break;
    std::optional<Clock::time_point> wake = window.NextExpiry();
    if (!window.empty()) {
      Clock::time_point give_up_at = window.last_progress() + options.give_up;
      if (now >= give_up_at) {
        return Incomplete("no acknowledgement for " +
                          std::to_string(options.give_up.count() / 1000.0) +
                          " s; outstanding: " + window.DescribeOutstanding(10));
      }
      if (!wake || give_up_at < *wake) wake = give_up_at;
    }
    size_t room = window.room();
    if (input_done || room == 0) {
      window.WaitForAck(wake);
      continue;
    }
    std::optional<size_t> n;
    if (wake) {
      n = queue.PopUpToUntil(std::min(batch, room), items, *wake);
    } else {
      n = queue.PopUpTo(std::min(batch, room), items);
    }
    if (!n) continue;  // A timer is due.
    if (*n == 0) {
      input_done = true;
      continue;
    }
    now = Clock::now();
    for (const Item& item : items) window.Add(item, now);
    Status s = sender.Send(items);
    if (!s.ok()) return s;
  }
  if (sender.unsent() > 0) {
    return Unavailable(std::to_string(sender.unsent()) +
                       " items could not be sent within the drain timeout");
  }
  return Status::Ok();
}

}  // namespace

nlohmann::json ProducerCounters::ToJson() const {
  nlohmann::json out;
  out["emitted"] = emitted.value();
  out["acked"] = acked.value();
  out["ack_frames"] = ack_frames.value();
  out["retransmits"] = retransmits.value();
  ack_rejected.AppendTo(out);
  send.AppendTo(out);
  return out;
}

std::string NewStreamId() {
  static constexpr char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::random_device random;
  std::uniform_int_distribution<int> pick(0, sizeof(kAlphabet) - 2);
  std::string id(12, '0');
  for (char& c : id) c = kAlphabet[pick(random)];
  return id;
}

Status RunProducer(const ProducerOptions& options, StopSignal& stop,
                   ProducerCounters& counters, std::ostream& ready_out) {
  zmq::context_t context(1);
  SocketOptions socket_options = options.flags.socket;
  socket_options.monitor_peers = options.wait_peers > 0;
  StatusOr<OpenedSocket> opened = OpenSocket(
      context, zmq::socket_type::push, options.out, socket_options);
  if (!opened.ok()) return opened.status();

  std::string addresses = DescribeAddresses(options.out, *opened);
  ready_out << "READY out=" << addresses << " stream=" << options.stream
            << std::endl;
  spdlog::info("stream {}: sending to {}", options.stream, addresses);
  // Acks: subscribe to this stream's acks and wait until the sink's ack
  // socket is connected, so that the first acks are not missed.
  std::optional<zmq::socket_t> acks_socket;
  if (!options.acks.empty()) {
    SocketOptions ack_options = options.flags.socket;
    ack_options.monitor_peers = true;
    // A SUB socket only ever queues subscriptions; never wait on those.
    ack_options.linger_ms = 0;
    StatusOr<OpenedSocket> sub = OpenSocket(context, zmq::socket_type::sub,
                                            options.acks, ack_options);
    if (!sub.ok()) return sub.status();
    try {
      sub->socket.set(zmq::sockopt::subscribe, AckTopic(options.stream));
    } catch (const zmq::error_t& e) {
      return Internal(std::string("subscribing to acks: ") + e.what());
    }
    spdlog::info("stream {}: waiting for the sink's acks on {}", options.stream,
                 DescribeAddresses(options.acks, *sub));
    StatusOr<WaitOutcome> waited =
        WaitForPeers(*sub, 1, stop.fd(), options.give_up);
    if (!waited.ok()) return waited.status();
    if (*waited == WaitOutcome::kTimedOut) {
      return Unavailable("the sink's ack socket at " +
                         DescribeAddresses(options.acks, *sub) +
                         " did not answer within --give-up; is the sink "
                         "running (or should this run use --acks off)?");
    }
    acks_socket = std::move(sub->socket);
  }
  if (options.wait_peers > 0) {
    StatusOr<WaitOutcome> waited =
        WaitForPeers(*opened, options.wait_peers, stop.fd());
    if (!waited.ok()) return waited.status();
    // Stopped before anyone came: still send an (empty) end-of-stream below,
    // bounded by the drain timeout.
  }

  BoundedQueue<Item> queue(options.flags.queue_capacity);
  Status read_status;
  std::thread reader([&] {
    Emitter emitter(options, stop, queue, counters);
    read_status = emitter.Run();
  });
  Status send_status;
  if (acks_socket) {
    InflightWindow window(options.window, options.retransmit);
    StopSignal acks_done;
    Status ack_status;
    std::thread ack_thread([&, socket = std::move(*acks_socket)]() mutable {
      ack_status = AckLoop(socket, acks_done, kDefaultMaxFrameBytes, window,
                           counters);
      socket.close();
    });
    send_status = ReliableSendLoop(opened->socket, stop, options, queue,
                                   window, counters);
    acks_done.Request();
    ack_thread.join();
    if (send_status.ok()) send_status = ack_status;
  } else {
    send_status = SendLoop(opened->socket, stop, options.flags.send, queue,
                           counters.send);
  }
  queue.Close();  // Unblocks the reader if the send loop failed.
  reader.join();

  opened->socket.close();
  bool flushed = TerminateContext(context, options.flags.socket.linger_ms);
  if (!send_status.ok()) return send_status;
  if (!read_status.ok() && read_status.code() != StatusCode::kCancelled) {
    return read_status;
  }
  if (!flushed) {
    return Unavailable("frames were still queued after --linger-ms " +
                       std::to_string(options.flags.socket.linger_ms) +
                       ": downstream stopped taking them");
  }
  return read_status;
}

}  // namespace sluice
