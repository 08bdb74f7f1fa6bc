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

}  // namespace

nlohmann::json ProducerCounters::ToJson() const {
  nlohmann::json out;
  out["emitted"] = emitted.value();
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
  Status send_status =
      SendLoop(opened->socket, stop, options.flags.send, queue, counters.send);
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
