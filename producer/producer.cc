#include "producer/producer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "common/bounded_queue.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/thread.h"

namespace sluice {
namespace {


// Produces the items of one stream into a queue; runs on the read thread.
class Emitter {
 public:
  // `input_fd`: the open --input (or -1 for --count); `skip`: sorted,
  // disjoint [begin, end) ranges of seqs the sink already holds.
  Emitter(const ProducerOptions& options, const StopSignal& stop,
          BoundedQueue<ItemRun>& queue, RunPool& pool, ProducerCounters& counters,
          int input_fd, std::vector<std::pair<uint64_t, uint64_t>> skip)
      : options_(options),
        stop_(stop),
        queue_(queue),
        pool_(pool),
        counters_(counters),
        input_fd_(input_fd),
        skip_(std::move(skip)) {}

  // Emits the stream; on success (or a stop) ends it with its end-of-stream.
  // Closes the queue in every case.
  Status EmitStream() {
    Status status = input_fd_ >= 0 ? ReadLines(input_fd_) : EmitCount();
    if (status.ok() || status.code() == StatusCode::kCancelled) {
      bool ok = Flush();
      if (ok) {
        run_.Append(Item::EndOfStream(options_.stream, next_));
        ok = queue_.Push(std::move(run_));
      }
      if (!ok) status = Internal("queue closed before the end-of-stream");
    }
    queue_.Close();
    return status;
  }

 private:
  // True if the sink already holds `seq` (a resumed stream).
  bool Skipped(uint64_t seq) {
    while (skip_at_ < skip_.size() && skip_[skip_at_].second <= seq) ++skip_at_;
    return skip_at_ < skip_.size() && skip_[skip_at_].first <= seq;
  }

  bool Emit(std::string payload, std::shared_ptr<const ItemFailure> failure = nullptr) {
    const uint64_t seq = next_++;
    if (Skipped(seq)) {
      counters_.resumed.Add();
      return true;
    }
    Item& item = run_.Append();
    item.stream = options_.stream;
    item.seq = seq;
    item.payload = std::move(payload);
    // The clock once per kStampEvery items: those are emitted within a
    // microsecond or two of each other, and a read costs more than that.
    if (run_.size() % kStampEvery == 1) stamp_us_ = WallMicros();
    item.produced_at_us = stamp_us_;
    item.failure = std::move(failure);
    return run_.size() < options_.flags.send.batch_items || Flush();
  }

  // Hands the run emitted so far to the send loop.
  bool Flush() {
    if (run_.empty()) return true;
    const size_t n = run_.size();
    if (!queue_.Push(std::move(run_))) return false;
    counters_.emitted.Add(n);
    run_ = pool_.Get();
    return true;
  }

  Status EmitCount() {
    for (uint64_t i = 0; i < options_.count; ++i) {
      if (stop_.requested()) return Cancelled("stopped");
      if (Skipped(i)) {  // A whole range the sink holds, at once.
        const uint64_t end = std::min(skip_[skip_at_].second, options_.count);
        counters_.resumed.Add(end - i);
        next_ = end;
        i = end - 1;
        continue;
      }
      if (!Emit(std::to_string(i))) return Internal("queue closed");
    }
    return Status::Ok();
  }

  // A line over max_item_bytes: a failed item in its place, so the stream
  // still ends and every later line keeps its seq. Its payload is the
  // line's start, for the dead-letter file.
  bool EmitTooLarge(std::string start, uint64_t length, uint64_t line_number) {
    counters_.too_large.Add();
    too_large_log_.Warn("line " + std::to_string(line_number) + " of --input '" +
                        *options_.input + "' is " + std::to_string(length) +
                        " bytes, over --max-item-bytes " +
                        std::to_string(options_.max_item_bytes) +
                        ": sent as a failed item (item_too_large)");
    auto failure = std::make_shared<ItemFailure>(ItemFailure{
        .op = "producer",
        .reason = "item_too_large",
        .detail = "line " + std::to_string(line_number) + " of " +
                  *options_.input + " is " + std::to_string(length) +
                  " bytes, over --max-item-bytes " +
                  std::to_string(options_.max_item_bytes) +
                  "; the payload holds its first bytes",
        .worker = "producer",
        .attempts = 1});
    return Emit(std::move(start), std::move(failure));
  }

  // Reads with poll() on the input and the stop fd, so that a stop request
  // interrupts a read from a quiet stdin.
  Status ReadLines(int fd) {
    const size_t max_line = options_.max_item_bytes;
    constexpr size_t kKeptOfTooLarge = 256;
    uint64_t too_large_length = 0;  // > 0 while skipping an oversize line.
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
        const size_t piece = static_cast<size_t>((nl ? nl : end) - p);
        if (too_large_length > 0) {
          too_large_length += piece;  // Skipping: keep nothing more.
        } else if (line.size() + piece > max_line) {
          too_large_length = line.size() + piece;
          line.append(p, std::min(piece, kKeptOfTooLarge));
          line.resize(std::min(line.size(), kKeptOfTooLarge));
        } else {
          line.append(p, piece);
        }
        if (!nl) break;
        ++line_number;
        bool ok = too_large_length > 0
                      ? EmitTooLarge(std::move(line), too_large_length, line_number)
                      : Emit(std::move(line));
        if (!ok) return Internal("queue closed");
        too_large_length = 0;
        line.clear();
        p = nl + 1;
      }
      // Batching never waits: what this read brought goes out now, before
      // the next read blocks on a quiet input.
      if (!Flush()) return Internal("queue closed");
    }
    if (!line.empty() || too_large_length > 0) {  // Last line without a newline.
      bool ok = too_large_length > 0
                    ? EmitTooLarge(std::move(line), too_large_length, line_number + 1)
                    : Emit(std::move(line));
      if (!ok) return Internal("queue closed");
    }
    return Status::Ok();
  }

  const ProducerOptions& options_;
  const StopSignal& stop_;
  BoundedQueue<ItemRun>& queue_;
  RunPool& pool_;
  ProducerCounters& counters_;
  const int input_fd_;
  const std::vector<std::pair<uint64_t, uint64_t>> skip_;
  size_t skip_at_ = 0;
  ItemRun run_;
  uint64_t next_ = 0;
  int64_t stamp_us_ = 0;  // Wall time given to the items of a few emits.
  static constexpr size_t kStampEvery = 16;
  RateLimitedLog too_large_log_{"input.too_large", std::chrono::seconds(1)};
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
    counters.duplicates_reported.Set(window.duplicates_reported());
    counters.flow_limit.Set(window.limit());
    counters.window_items.Set(window.size());
    counters.stage_wait_us.Set(static_cast<uint64_t>(window.queued_us()));
  }
}

// The send loop of the reliable mode: new items while the window has room,
// resends of what timed out, and once the input is done, waiting for the
// last acks. After a stop request it waits at most options.stop_grace.
Status ReliableSendLoop(zmq::socket_t& socket, const StopSignal& stop,
                        const ProducerOptions& options, BoundedQueue<ItemRun>& queue,
                        RunPool& pool, InflightWindow& window,
                        ProducerCounters& counters) {
  using Clock = InflightWindow::Clock;
  BatchSender sender(socket, stop, options.flags.send, counters.send);
  const size_t batch_items = options.flags.send.batch_items;
  std::vector<Item> items;  // Resends, or items from the backlog.
  std::vector<ItemRun> runs;    // New items, a run at a time.
  // Items taken from the queue that the window cannot take yet (beyond the
  // flow limit, or beyond its span when the seqs of a resumed stream skip):
  // sent once acks make room.
  std::vector<Item> backlog;
  bool input_done = false;
  std::optional<Clock::time_point> stop_deadline;
  // Sends what of `batch` fits the window; the rest goes to the backlog's
  // front. Returns how many were sent (in `sent`).
  auto send = [&](std::span<Item> batch, Clock::time_point now, size_t& sent) {
    const size_t fit = window.Fitting(batch);
    if (fit < batch.size()) {
      backlog.insert(backlog.begin(), std::make_move_iterator(batch.begin() + fit),
                     std::make_move_iterator(batch.end()));
    }
    sent = fit;
    window.Add(batch.first(fit), now);
    sender.set_give_up(window.last_progress() + options.give_up);
    sender.set_frame_items(window.FrameItems(batch_items));
    return fit == 0 ? Status::Ok()
                    : sender.Send(std::span<const Item>(batch.first(fit)));
  };
  while (true) {
    Clock::time_point now = Clock::now();
    if (!stop_deadline && stop.requested()) stop_deadline = now + options.stop_grace;
    items.clear();
    if (size_t n = window.TakeExpired(now, batch_items, items); n > 0) {
      counters.retransmits.Add(n);
      sender.set_give_up(window.last_progress() + options.give_up);
      sender.set_frame_items(window.FrameItems(batch_items));
      Status s = sender.Send(items);
      if (!s.ok()) return s;
      continue;
    }
    if (input_done && backlog.empty() && window.empty()) break;
    std::optional<Clock::time_point> wake = window.NextExpiry();
    if (!window.empty()) {
      Clock::time_point give_up_at = window.last_progress() + options.give_up;
      if (now >= give_up_at) {
        return Incomplete("no acknowledgement for " +
                          std::to_string(options.give_up.count() / 1000.0) +
                          " s; outstanding: " + window.DescribeOutstanding(10));
      }
      if (stop_deadline && now >= *stop_deadline) {
        return Incomplete("stopped with " + window.DescribeOutstanding(10) +
                          " not acknowledged within " +
                          std::to_string(options.stop_grace.count() / 1000.0) +
                          " s; run the same command (same --stream " +
                          options.stream + ") to resume");
      }
      if (!wake || give_up_at < *wake) wake = give_up_at;
      if (stop_deadline && *stop_deadline < *wake) wake = stop_deadline;
    }
    if (!backlog.empty()) {
      size_t take = std::min(backlog.size(), batch_items);
      items.assign(std::make_move_iterator(backlog.begin()),
                   std::make_move_iterator(backlog.begin() + take));
      backlog.erase(backlog.begin(), backlog.begin() + take);
      size_t sent = 0;
      Status s = send(items, now, sent);
      if (!s.ok()) return s;
      if (sent == 0) window.WaitForAck(wake);
      continue;
    }
    size_t room = window.room();
    if (input_done || room == 0) {
      window.WaitForAck(wake);
      continue;
    }
    // A run at a time: what does not fit the window waits in the backlog.
    std::optional<size_t> n;
    runs.clear();
    if (wake) {
      n = queue.PopUpToUntil(1, runs, *wake);
    } else {
      n = queue.PopUpTo(1, runs);
    }
    if (!n) continue;  // A timer is due.
    if (*n == 0) {
      input_done = true;
      continue;
    }
    size_t sent = 0;
    Status s = send(runs[0].items(), Clock::now(), sent);
    pool.Put(std::move(runs[0]));
    if (!s.ok()) return s;
  }
  if (sender.unsent() > 0) {
    return Unavailable(std::to_string(sender.unsent()) +
                       " items could not be sent within the drain timeout");
  }
  return Status::Ok();
}

// What the sink said to this instance's hello.
struct HelloOutcome {
  bool answered = false;
  bool complete = false;  // The sink has the whole stream already.
  std::vector<std::pair<uint64_t, uint64_t>> held;  // Sorted, disjoint.
};

// Says hello on the ack socket (already connected and subscribed to the
// stream's acks) and waits for the answer. A REJECTED answer is asked again
// a few times, a moment apart: the previous instance of a restarted
// producer may not have been seen to go yet.
StatusOr<HelloOutcome> SayHello(zmq::socket_t& socket, const StopSignal& stop,
                                const ProducerOptions& options,
                                ProducerCounters& counters) {
  constexpr int kAttempts = 5;
  constexpr std::chrono::milliseconds kRetryAfter{300};
  const std::string topic = HelloTopic(options.stream, options.epoch);
  HelloOutcome outcome;
  zmq::message_t frame;
  AckMessage ack;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    try {
      if (attempt > 1) socket.set(zmq::sockopt::unsubscribe, topic);
      socket.set(zmq::sockopt::subscribe, topic);
    } catch (const zmq::error_t& e) {
      return Internal(std::string("saying hello: ") + e.what());
    }
    outcome.held.clear();
    const auto deadline = std::chrono::steady_clock::now() + options.hello_timeout;
    bool rejected = false;
    while (!rejected) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        spdlog::warn("stream {}: the sink did not answer the hello within {} s "
                     "(an older sink?): sending the whole stream",
                     options.stream, options.hello_timeout.count() / 1000.0);
        return outcome;
      }
      StatusOr<WaitOutcome> got = ReceiveFrame(socket, stop.fd(), left, frame);
      if (!got.ok()) return got.status();
      if (*got == WaitOutcome::kStopped) return Cancelled("stopped");
      if (*got != WaitOutcome::kReady) continue;
      if (auto reject = DecodeAck(frame.data(), frame.size(),
                                  kDefaultMaxFrameBytes, ack)) {
        counters.ack_rejected.Count(*reject);
        continue;
      }
      if (ack.stream != options.stream || ack.hello_epoch != options.epoch) {
        continue;  // Acks for another instance; the answer is what counts.
      }
      outcome.held.insert(outcome.held.end(), ack.ranges.begin(), ack.ranges.end());
      if (ack.answer == HelloAnswer::kWelcome) {
        outcome.answered = true;
        outcome.complete = ack.complete;
        std::sort(outcome.held.begin(), outcome.held.end());
        return outcome;
      }
      if (ack.answer == HelloAnswer::kRejected) rejected = true;
    }
    // Rejected: wait a moment (for acks that may say the holder left).
    StatusOr<WaitOutcome> got = ReceiveFrame(socket, stop.fd(), kRetryAfter, frame);
    if (!got.ok()) return got.status();
    if (*got == WaitOutcome::kStopped) return Cancelled("stopped");
  }
  return Unavailable("stream " + options.stream + " is being produced by "
                     "another live producer (the sink refused this one, "
                     "epoch " + std::to_string(options.epoch) + "); give each "
                     "producer its own --stream, or stop the other first. "
                     "Nothing was sent.");
}

}  // namespace

nlohmann::json ProducerCounters::ToJson() const {
  nlohmann::json out;
  out["emitted"] = emitted.value();
  out["acked"] = acked.value();
  out["ack_frames"] = ack_frames.value();
  out["retransmits"] = retransmits.value();
  out["resumed"] = resumed.value();
  out["too_large"] = too_large.value();
  out["curve_refused"] = curve_refused.value();
  out["handshake_failed"] = handshake_failed.value();
  out["duplicates_reported"] = duplicates_reported.value();
  out["gauges"] = {{"flow_limit", flow_limit.value()},
                   {"stage_wait_us", stage_wait_us.value()},
                   {"window_items", window_items.value()}};
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

uint64_t NewEpoch() {
  std::random_device random;
  uint64_t epoch = 0;
  while (epoch == 0) epoch = (uint64_t{random()} << 32) | random();
  return epoch;
}

StatusOr<std::string> StreamIdForFile(const std::string& path) {
  struct stat st;
  char* real = realpath(path.c_str(), nullptr);
  if (real == nullptr || stat(real, &st) != 0) {
    std::free(real);
    return InvalidArgument("cannot open --input '" + path +
                           "': " + std::strerror(errno));
  }
  std::string key = std::string(real) + '\0' + std::to_string(st.st_size) +
                    '\0' + std::to_string(st.st_mtim.tv_sec) + '.' +
                    std::to_string(st.st_mtim.tv_nsec) + '\0' +
                    std::to_string(st.st_ino);
  std::free(real);
  // FNV-1a, 64 bits: stable across builds and machines, unlike std::hash.
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : key) hash = (hash ^ c) * 0x100000001b3ULL;
  char id[17];
  std::snprintf(id, sizeof(id), "f%015llx",
                static_cast<unsigned long long>(hash >> 4));
  return std::string(id);
}

Status RunProducer(const ProducerOptions& options, StopSignal& stop,
                   ProducerCounters& counters, std::ostream& ready_out) {
  // The input first: a file that cannot be read fails before READY.
  int input_fd = -1;
  if (options.input) {
    input_fd = *options.input == "-"
                   ? STDIN_FILENO
                   : open(options.input->c_str(), O_RDONLY | O_CLOEXEC);
    if (input_fd < 0) {
      return InvalidArgument("cannot open --input '" + *options.input +
                             "': " + std::strerror(errno));
    }
  }
  struct CloseInput {
    int fd;
    ~CloseInput() {
      if (fd > STDIN_FILENO) close(fd);
    }
  } close_input{input_fd};
  zmq::context_t context(1);
  auto guards = ContextGuards::Start(context, options.flags.socket, counters.curve_refused,
                                     counters.handshake_failed);
  if (!guards.ok()) return guards.status();
  StatusOr<OpenedSocket> opened = OpenSocket(
      context, zmq::socket_type::push, options.out, guards->For("out"));
  if (!opened.ok()) return opened.status();

  std::string addresses = DescribeAddresses(options.out, *opened);
  ready_out << "READY out=" << addresses << " stream=" << options.stream
            << " epoch=" << options.epoch << std::endl;
  // Leaving early (stopped, refused, nothing to do): drop what is queued
  // instead of lingering on it.
  auto abandon = [&](std::optional<zmq::socket_t>* acks) {
    opened->socket.set(zmq::sockopt::linger, 0);
    if (acks && *acks) (*acks)->set(zmq::sockopt::linger, 0);
  };
  spdlog::info("stream {}: sending to {}", options.stream, addresses);
  // Acks: subscribe to this stream's acks and wait until the sink's ack
  // socket is connected, so that the first acks are not missed.
  std::optional<zmq::socket_t> acks_socket;
  std::vector<std::pair<uint64_t, uint64_t>> held;  // The sink has these.
  if (!options.acks.empty()) {
    SocketOptions ack_options = guards->For("acks");
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
        WaitForPeers(*sub, guards->watch(), 1, stop.fd(), options.give_up);
    if (!waited.ok()) return waited.status();
    if (*waited == WaitOutcome::kStopped) {
      abandon(nullptr);
      return Cancelled("stopped before the sink's ack socket answered");
    }
    if (*waited == WaitOutcome::kTimedOut) {
      abandon(nullptr);
      const uint64_t failed = counters.handshake_failed.value();
      return Unavailable(
          "the sink's ack socket at " + DescribeAddresses(options.acks, *sub) +
          " did not answer within --give-up" +
          (failed > 0 ? " (" + std::to_string(failed) +
                            " handshakes failed; the handshake.refused line says why)"
                      : "") +
          "; is the sink running (or should this run use --acks off)?");
    }
    acks_socket = std::move(sub->socket);
    StatusOr<HelloOutcome> hello = SayHello(*acks_socket, stop, options, counters);
    if (!hello.ok() || hello->complete) abandon(&acks_socket);
    if (!hello.ok()) return hello.status();
    if (hello->complete) {
      spdlog::info("stream {}: already complete at the sink; nothing to send",
                   options.stream);
      return Status::Ok();
    }
    held = std::move(hello->held);
    if (!held.empty()) {
      uint64_t n = 0;
      for (const auto& [b, e] : held) n += e - b;
      spdlog::info("stream {}: resuming; the sink already holds {} items, "
                   "which are not sent again", options.stream, n);
    }
  }
  if (options.wait_peers > 0) {
    StatusOr<WaitOutcome> waited =
        WaitForPeers(*opened, guards->watch(), options.wait_peers, stop.fd());
    if (!waited.ok()) return waited.status();
    if (*waited == WaitOutcome::kStopped) {
      // Nobody came: nothing was sent, and nothing is left to flush.
      abandon(&acks_socket);
      return Cancelled("stopped while waiting for --peers");
    }
  }

  BoundedQueue<ItemRun> queue(RunCapacity(options.flags.queue_capacity,
                                      options.flags.send.batch_items));
  RunPool pool;
  Status read_status;
  auto reader = StartThread("input", [&] {
    Emitter emitter(options, stop, queue, pool, counters, input_fd, std::move(held));
    read_status = emitter.EmitStream();
  });
  if (!reader.ok()) {
    abandon(&acks_socket);
    return reader.status();
  }
  Status send_status;
  if (acks_socket) {
    InflightWindow window(
        options.window, options.retransmit,
        FlowOptions{.max_bytes = options.window_bytes,
                    .peers = static_cast<size_t>(std::max(1, options.wait_peers))});
    StopSignal acks_done;
    Status ack_status;
    auto ack_thread = StartThread("ack", [&, socket = std::move(*acks_socket)]() mutable {
      ack_status = AckLoop(socket, acks_done, kDefaultMaxFrameBytes, window,
                           counters);
      socket.close();
    });
    if (ack_thread.ok()) {
      send_status = ReliableSendLoop(opened->socket, stop, options, queue,
                                     pool, window, counters);
      acks_done.Request();
      ack_thread->join();
      if (send_status.ok()) send_status = ack_status;
    } else {
      send_status = ack_thread.status();
    }
  } else {
    send_status = SendLoop(opened->socket, stop, options.flags.send, queue,
                           pool, counters.send);
  }
  queue.Close();  // Unblocks the reader if the send loop failed.
  reader->join();

  if (!send_status.ok()) abandon(nullptr);  // Unacknowledged anyway.
  opened->socket.close();
  guards->Stop();
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
