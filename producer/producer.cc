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

using Clock = std::chrono::steady_clock;

// Where the emitter's runs go: with acks off, a queue to the caller's thread,
// which sends (SendLoop); with acks, the reliable sender, on the emitter's
// own thread.
class RunSink {
 public:
  virtual ~RunSink() = default;
  // Takes `run`, the next of the stream; false once the stream cannot go on.
  virtual bool Put(ItemRun&& run) = 0;
  // When Idle() is next due while the input is quiet (nullopt: never).
  virtual std::optional<Clock::time_point> IdleUntil() const { return std::nullopt; }
  // Work that is due while the input is quiet; false as Put().
  virtual bool Idle() { return true; }
  // After the last run (or a failure).
  virtual void Close() {}
};

// Hands runs through a bounded queue to the thread that sends (acks off).
class QueueSink : public RunSink {
 public:
  explicit QueueSink(BoundedQueue<ItemRun>& queue) : queue_(queue) {}
  bool Put(ItemRun&& run) override { return queue_.Push(std::move(run)); }
  void Close() override { queue_.Close(); }

 private:
  BoundedQueue<ItemRun>& queue_;
};

// Produces the items of one stream into a RunSink.
class Emitter {
 public:
  // `input_fd`: the open --input (or -1 for --count); `skip`: sorted,
  // disjoint [begin, end) ranges of seqs the sink already holds.
  Emitter(const ProducerOptions& options, const StopSignal& stop, RunSink& sink,
          RunPool& pool, ProducerCounters& counters, int input_fd,
          std::vector<std::pair<uint64_t, uint64_t>> skip)
      : options_(options),
        stop_(stop),
        sink_(sink),
        pool_(pool),
        counters_(counters),
        input_fd_(input_fd),
        skip_(std::move(skip)) {}

  // Emits the stream; on success (or a stop) ends it with its end-of-stream.
  // Closes the sink in every case. If the sink stops taking runs, this
  // returns SinkFailed() (kInternal), which says only that: the sink's own
  // status says why, and RunProducer reports that one instead.
  Status EmitStream() {
    Status status = input_fd_ >= 0 ? ReadLines(input_fd_) : EmitCount();
    if (status.ok() || status.code() == StatusCode::kCancelled) {
      bool ok = Flush();
      if (ok) {
        run_.Append(Item::EndOfStream(options_.stream, next_));
        ok = sink_.Put(std::move(run_));
      }
      if (!ok) status = SinkFailed();
    }
    sink_.Close();
    return status;
  }

  static Status SinkFailed() { return Internal("the send side stopped taking items"); }

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

  // Hands the run emitted so far to the sink.
  bool Flush() {
    if (run_.empty()) return true;
    const size_t n = run_.size();
    counters_.emitted.Add(n);
    if (!sink_.Put(std::move(run_))) return false;
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
      if (!Emit(std::to_string(i))) return SinkFailed();
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
  // interrupts a read from a quiet stdin; while the input is quiet, the
  // sink's idle work (resends) runs when due.
  Status ReadLines(int fd) {
    const size_t max_line = options_.max_item_bytes;
    constexpr size_t kKeptOfTooLarge = 256;
    uint64_t too_large_length = 0;  // > 0 while skipping an oversize line.
    std::string line;
    char buffer[1 << 16];
    uint64_t line_number = 0;
    while (true) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {stop_.fd(), POLLIN, 0}};
      int timeout_ms = -1;
      if (const auto due = sink_.IdleUntil()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(*due - Clock::now());
        timeout_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 60'000));
      }
      const int ready = poll(fds, 2, timeout_ms);
      if (ready < 0) {
        if (errno == EINTR) continue;
        return Internal(std::string("poll on --input: ") + std::strerror(errno));
      }
      if (fds[1].revents & POLLIN) return Cancelled("stopped");
      if (ready == 0) {
        if (!sink_.Idle()) return SinkFailed();
        continue;
      }
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
        if (!ok) return SinkFailed();
        too_large_length = 0;
        line.clear();
        p = nl + 1;
      }
      // Batching never waits: what this read brought goes out now, before
      // the next read blocks on a quiet input.
      if (!Flush()) return SinkFailed();
    }
    if (!line.empty() || too_large_length > 0) {  // Last line without a newline.
      bool ok = too_large_length > 0
                    ? EmitTooLarge(std::move(line), too_large_length, line_number + 1)
                    : Emit(std::move(line));
      if (!ok) return SinkFailed();
    }
    return Status::Ok();
  }

  const ProducerOptions& options_;
  const StopSignal& stop_;
  RunSink& sink_;
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

// The send side of the reliable mode, on the emitter's thread (so that an
// item read from a quiet input goes out without a hand-off): sends what the
// window lets through, waits for acks when it is full, resends what timed
// out, and after the end-of-stream waits for the last acks. After a stop
// request it waits at most options.stop_grace. Its first failure stays in
// status(); runs go back to `pool`.
class ReliableSender : public RunSink {
 public:
  ReliableSender(zmq::socket_t& socket, const StopSignal& stop,
                 const ProducerOptions& options, RunPool& pool, InflightWindow& window,
                 ProducerCounters& counters)
      : stop_(stop),
        options_(options),
        pool_(pool),
        window_(window),
        counters_(counters),
        sender_(socket, stop, options.flags.send, counters.send),
        batch_items_(options.flags.send.batch_items) {}

  bool Put(ItemRun&& run) override {
    if (status_.ok()) status_ = Send(run.items());
    // What was just sent may be the first outstanding item: IdleUntil()
    // must know when it expires. Otherwise wake_ is due no later than the
    // new items (sent last, they expire last), and Send() ticked already.
    if (status_.ok() && !wake_) status_ = Tick();
    pool_.Put(std::move(run));
    return status_.ok();
  }
  std::optional<Clock::time_point> IdleUntil() const override { return wake_; }
  bool Idle() override {
    if (status_.ok()) status_ = Tick();
    return status_.ok();
  }

  // After the last run: until everything sent is acknowledged.
  Status Drain() {
    while (status_.ok()) {
      status_ = Tick();
      if (!status_.ok() || window_.empty()) break;
      window_.WaitForAck(wake_);
    }
    if (status_.ok() && sender_.unsent() > 0) {
      status_ = Unavailable(std::to_string(sender_.unsent()) +
                            " items could not be sent within the drain timeout");
    }
    return status_;
  }
  const Status& status() const { return status_; }

 private:
  // Sends `items` in order as the window lets them through.
  Status Send(std::span<Item> items) {
    while (!items.empty()) {
      if (Status s = Tick(); !s.ok()) return s;
      const size_t fit = window_.Fitting(items);
      if (fit == 0) {
        window_.WaitForAck(wake_);
        continue;
      }
      window_.Add(items.first(fit), Clock::now());
      if (Status s = SendFrames(items.first(fit)); !s.ok()) return s;
      items = items.subspan(fit);
    }
    return Status::Ok();
  }

  Status SendFrames(std::span<const Item> items) {
    sender_.set_give_up(window_.last_progress() + options_.give_up);
    sender_.set_frame_items(window_.FrameItems(batch_items_));
    return sender_.Send(items);
  }

  // Resends what timed out, checks the give-up and stop deadlines, and sets
  // wake_: when to look again (nullopt: nothing outstanding).
  Status Tick() {
    Clock::time_point now = Clock::now();
    if (!stop_deadline_ && stop_.requested()) stop_deadline_ = now + options_.stop_grace;
    while (true) {
      resends_.clear();
      const size_t n = window_.TakeExpired(now, batch_items_, resends_);
      if (n == 0) break;
      counters_.retransmits.Add(n);
      if (Status s = SendFrames(resends_); !s.ok()) return s;
      now = Clock::now();
    }
    wake_ = window_.NextExpiry();
    if (window_.empty()) return Status::Ok();
    const Clock::time_point give_up_at = window_.last_progress() + options_.give_up;
    if (now >= give_up_at) {
      return Incomplete("no acknowledgement for " +
                        std::to_string(options_.give_up.count() / 1000.0) +
                        " s; outstanding: " + window_.DescribeOutstanding(10));
    }
    if (stop_deadline_ && now >= *stop_deadline_) {
      return Incomplete("stopped with " + window_.DescribeOutstanding(10) +
                        " not acknowledged within " +
                        std::to_string(options_.stop_grace.count() / 1000.0) +
                        " s; run the same command (same --stream " + options_.stream +
                        ") to resume");
    }
    if (!wake_ || give_up_at < *wake_) wake_ = give_up_at;
    if (stop_deadline_ && *stop_deadline_ < *wake_) wake_ = stop_deadline_;
    return Status::Ok();
  }

  const StopSignal& stop_;
  const ProducerOptions& options_;
  RunPool& pool_;
  InflightWindow& window_;
  ProducerCounters& counters_;
  BatchSender sender_;
  const size_t batch_items_;
  std::vector<Item> resends_;
  std::optional<Clock::time_point> wake_;
  std::optional<Clock::time_point> stop_deadline_;
  Status status_;
};

// What the sink said to this instance's hello.
struct HelloOutcome {
  bool answered = false;
  bool complete = false;  // The sink has the whole stream already.
  std::vector<std::pair<uint64_t, uint64_t>> held;  // Sorted, disjoint.
  uint64_t span = 0;  // Ack.span: 0 if the sink did not say.
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
        outcome.span = ack.span;
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

// Shuts `context` down once its sockets, closed with linger -1, have handed
// every queued frame to their peers. Says every few seconds that it is
// still at it, and once what a stop request does then: libzmq cannot take
// back frames it queues, so the wait goes on until the peers have them or
// disconnect. Returns true (nothing was dropped by a timer).
bool FlushCompleteStream(zmq::context_t& context, const StopSignal& stop,
                         const std::string& stream) {
  constexpr std::chrono::seconds kLogEvery{5};
  const Clock::time_point start = Clock::now();
  bool told_of_stop = false;  // The logging thread's.
  {
    PeriodicTask log(kLogEvery, [&] {
      const double waited =
          std::chrono::duration<double>(Clock::now() - start).count();
      spdlog::info("stream {}: every item and the end-of-stream are sent; "
                   "downstream is still taking the frames queued here "
                   "({:.0f} s so far; without acks they are the only copy, so "
                   "no timer drops them)",
                   stream, waited);
      if (stop.requested() && !told_of_stop) {
        told_of_stop = true;
        spdlog::warn("stream {}: stop requested while frames are still queued; "
                     "they leave as downstream takes them, or go with a peer "
                     "that disconnects (SIGKILL drops them all)",
                     stream);
      }
    });
    TerminateContext(context, -1);
  }
  return true;
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
  uint64_t span = 0;  // How far the sink takes items above its lowest missing.
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
    span = hello->span;
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

  RunPool pool;
  Status read_status, send_status;
  if (acks_socket) {
    // Reading and sending on this thread: a line read goes out at once.
    InflightWindow window(
        options.window, options.retransmit,
        FlowOptions{.max_bytes = options.window_bytes,
                    .peers = static_cast<size_t>(std::max(1, options.wait_peers)),
                    .span = span});
    StopSignal acks_done;
    Status ack_status;
    auto ack_thread = StartThread("ack", [&, socket = std::move(*acks_socket)]() mutable {
      ack_status = AckLoop(socket, acks_done, kDefaultMaxFrameBytes, window,
                           counters);
      socket.close();
    });
    if (!ack_thread.ok()) {
      abandon(nullptr);
      return ack_thread.status();
    }
    ReliableSender sender(opened->socket, stop, options, pool, window, counters);
    Emitter emitter(options, stop, sender, pool, counters, input_fd, std::move(held));
    read_status = emitter.EmitStream();
    send_status = sender.Drain();
    acks_done.Request();
    ack_thread->join();
    if (send_status.ok()) send_status = ack_status;
  } else {
    BoundedQueue<ItemRun> queue(RunCapacity(options.flags.queue_capacity,
                                            options.flags.send.batch_items));
    auto reader = StartThread("input", [&] {
      QueueSink sink(queue);
      Emitter emitter(options, stop, sink, pool, counters, input_fd, std::move(held));
      read_status = emitter.EmitStream();
    });
    if (!reader.ok()) {
      abandon(nullptr);
      return reader.status();
    }
    send_status = SendLoop(opened->socket, stop, options.flags.send, queue,
                           pool, counters.send);
    queue.Close();  // Unblocks the reader if the send loop failed.
    reader->join();
  }

  if (!send_status.ok()) abandon(nullptr);  // Unacknowledged anyway.
  // Without acks, the frames libzmq still queues when the stream is complete
  // are the only copy of its tail: a bounded linger would drop them while a
  // worker slower than this producer is still taking them. So the flush of
  // a complete stream is unbounded (linger -1): it lasts as long as a peer
  // still connected holds frames to take. A peer that disconnects takes its
  // frames with it at once (its pipe goes), so this never waits for a peer
  // that is gone. A stream that was stopped or failed keeps --linger-ms.
  const bool flush_all = !acks_socket && send_status.ok() && read_status.ok() &&
                         !stop.requested();
  if (flush_all) opened->socket.set(zmq::sockopt::linger, -1);
  opened->socket.close();
  guards->Stop();
  const bool flushed = flush_all ? FlushCompleteStream(context, stop, options.stream)
                                 : TerminateContext(context, options.flags.socket.linger_ms);
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
