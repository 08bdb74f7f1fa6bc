#include "stage/stage.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "common/log.h"
#include "common/socket.h"

namespace sluice {

nlohmann::json StageCounters::ToJson(const StageOptions& options) const {
  nlohmann::json out;
  receive.AppendTo(out);
  send.AppendTo(out);
  for (size_t i = 0; i < options.ops.size(); ++i) {
    const std::string suffix =
        std::to_string(i) + "_" + options.ops[i].definition->name;
    out["processed_" + suffix] = ops[i].processed.value();
    out["failed_" + suffix] = ops[i].failed.value();
    out["retries_" + suffix] = ops[i].retries.value();
    out["timeouts_" + suffix] = ops[i].timeouts.value();
    out["dropped_" + suffix] = ops[i].dropped.value();
    ops[i].AppendNamed(out, "_" + suffix);
  }
  out["late_dropped"] = late_dropped.value();
  out["curve_refused"] = curve_refused.value();
  out["handshake_failed"] = handshake_failed.value();
  out["gauges"] = {{"held_items", held_items.value()}};
  return out;
}

namespace {

// Runs that op threads finished, on their way back to the I/O thread, which
// polls fd() next to its sockets.
class Outbox {
 public:
  Outbox() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Outbox() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

  void Push(ItemRun run) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool was_empty = runs_.empty();
    runs_.push_back(std::move(run));
    lock.unlock();
    if (was_empty) {  // The I/O thread may sleep: wake it.
      const uint64_t one = 1;
      while (write(fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
      }
    }
  }
  // Moves every run waiting into `out` (the fd is read first, so that a
  // run pushed meanwhile wakes the next poll).
  void TakeAll(std::vector<ItemRun>& out) {
    uint64_t count = 0;
    while (read(fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (ItemRun& run : runs_) out.push_back(std::move(run));
    runs_.clear();
  }

 private:
  const int fd_;
  std::mutex mu_;
  std::vector<ItemRun> runs_;  // Guarded by mu_.
};

}  // namespace

size_t HeldCapacity(const StageOptions& options) {
  size_t slots = 0;
  for (const OpPlan& op : options.ops) {
    if (op.concurrency > 0) {
      slots += static_cast<size_t>(op.concurrency) * static_cast<size_t>(op.threads);
    }
  }
  if (slots == 0) return options.flags.queue_capacity;
  return std::max(options.flags.queue_capacity,
                  slots + 2 * options.flags.send.batch_items);
}

size_t WaitingCapacity(const StageOptions& options) {
  return 256 * std::max<size_t>(options.flags.queue_capacity, 1);
}

namespace {

bool AllBypass(const ItemRun& run) {
  for (const Item& item : run) {
    if (!item.end_of_stream && !item.failed()) return false;
  }
  return true;
}

// The stage's own thread: owns both sockets, receives frames into runs,
// runs cheap ops itself, hands the others to their threads, and sends what
// comes back. Never blocks but in poll().
class StageIo {
 public:
  StageIo(const StageOptions& options, StopSignal& stop, StageCounters& counters,
          std::vector<std::unique_ptr<OpRunner>>& runners, Outbox& outbox,
          zmq::socket_t& in, zmq::socket_t& out, zmq::socket_t* acks)
      : options_(options), stop_(stop), counters_(counters), runners_(runners),
        outbox_(outbox), in_(in), out_(out), acks_(acks) {}

  // Runs ops from `from` on `run` while they are cheap; submits it to the
  // first that is not. True if the chain is done with the run (the caller
  // keeps it, less the items an op took out to wait for a retry: they come
  // back later, through the outbox); false if an op's threads have it now.
  // Called on the I/O thread and on the op threads (their Forward).
  bool Forward(size_t from, ItemRun& run) {
    for (size_t i = from; i < runners_.size(); ++i) {
      if (AllBypass(run)) continue;
      if (runners_[i]->InlineFor(run.size()) && runners_[i]->RunInline(run)) continue;
      runners_[i]->Submit(std::move(run));
      return false;
    }
    return true;
  }

  Status Serve() {
    try {
      return Loop();
    } catch (const zmq::error_t& e) {
      return Internal(std::string("stage socket: ") + e.what());
    }
  }

  uint64_t unsent() const { return unsent_; }

 private:
  struct Pending {
    zmq::message_t frame;
    size_t items;  // Data items, or 1 for an end-of-stream.
    bool end;
    std::string stream;  // With --acks: its items' stream ("" if several).
  };

  // With --acks: subscribes to the completion of the streams of `run` not
  // yet watched, and drops its items of streams the sink reported complete.
  void Watch(ItemRun& run) {
    const std::string* last = nullptr;
    for (const Item& item : run) {
      if (last != nullptr && item.stream == *last) continue;
      last = &item.stream;
      if (watched_.size() >= kMaxWatched || watched_.count(item.stream) ||
          complete_.count(item.stream)) {
        continue;
      }
      acks_->set(zmq::sockopt::subscribe, DoneTopic(item.stream));
      watched_.insert(item.stream);
    }
    if (complete_.empty()) return;
    size_t kept = 0;
    for (size_t i = 0; i < run.size(); ++i) {
      if (complete_.count(run[i].stream)) continue;
      if (kept != i) std::swap(run[kept], run[i]);
      ++kept;
    }
    counters_.late_dropped.Add(run.size() - kept);
    run.Truncate(kept);
  }

  // The stream of gather_[at, at + count), or "" if they are of several.
  std::string FrameStream(size_t at, size_t count) const {
    const std::string& first = gather_[at]->stream;
    for (size_t i = at + 1; i < at + count; ++i) {
      if (gather_[i]->stream != first) return "";
    }
    return first;
  }

  // Reads the sink's completions (DoneTopic); for each stream it reports
  // complete, drops the frames of it waiting to be sent: the sink has
  // committed every item already.
  void ReadCompletions() {
    zmq::message_t message;
    while (acks_->recv(message, zmq::recv_flags::dontwait)) {
      std::optional<std::string> stream = ParseDoneTopic(
          std::string_view(static_cast<const char*>(message.data()), message.size()));
      if (!stream || complete_.count(*stream)) continue;
      if (complete_.size() >= kMaxWatched) complete_.clear();
      complete_.insert(*stream);
      if (watched_.erase(*stream) > 0) {
        acks_->set(zmq::sockopt::unsubscribe, DoneTopic(*stream));
      }
      size_t dropped = 0;
      std::erase_if(pending_, [&](const Pending& p) {
        if (p.stream != *stream) return false;
        dropped += p.items;
        return true;
      });
      held_ -= dropped;
      pending_items_ -= dropped;
      counters_.late_dropped.Add(dropped);
      spdlog::info("stream {}: complete at the sink; dropped {} items held for it",
                   *stream, dropped);
    }
  }

  Status Loop() {
    const size_t capacity = HeldCapacity(options_);
    const size_t waiting_capacity = WaitingCapacity(options_);
    // True while the stage may read more: it holds fewer than `capacity`
    // items, not counting those waiting out a retry's backoff, which hold
    // no thread and are bounded apart.
    auto room = [&] {
      size_t waiting = 0;
      for (const auto& runner : runners_) waiting += runner->waiting();
      waiting = std::min(waiting, held_);
      return held_ - waiting < capacity && waiting < waiting_capacity;
    };
    std::vector<ItemRun> back;
    RateLimitedLog reject_log("rx.reject", std::chrono::seconds(1));
    zmq::message_t frame;
    bool stopping = false;
    std::optional<std::chrono::steady_clock::time_point> deadline;
    while (true) {
      Flush();
      counters_.held_items.Set(held_);
      const auto now = std::chrono::steady_clock::now();
      if (deadline && now >= *deadline && !pending_.empty()) {
        // Past the drain deadline: what cannot leave now never will.
        for (const Pending& p : pending_) unsent_ += p.items;
        held_ -= pending_items_;
        pending_items_ = 0;
        pending_.clear();
      }
      if (stopping && submitted_ == 0 && pending_.empty()) break;
      const bool receive = !stopping && room();
      zmq::pollitem_t items[5];
      int n = 0;
      int in_at = -1, stop_at = -1, acks_at = -1;
      const int outbox_at = n;
      items[n++] = {nullptr, outbox_.fd(), ZMQ_POLLIN, 0};
      if (acks_ != nullptr) {
        acks_at = n;
        items[n++] = {acks_->handle(), 0, ZMQ_POLLIN, 0};
      }
      if (receive) {
        in_at = n;
        items[n++] = {in_.handle(), 0, ZMQ_POLLIN, 0};
      }
      if (!pending_.empty()) {  // Flush() at the top of the loop sends.
        items[n++] = {out_.handle(), 0, ZMQ_POLLOUT, 0};
      }
      if (!stopping) {
        stop_at = n;
        items[n++] = {nullptr, stop_.fd(), ZMQ_POLLIN, 0};
      }
      long timeout_ms = -1;
      if (deadline && !pending_.empty()) {
        timeout_ms = std::max<long>(
            1, std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - now)
                   .count());
      }
      try {
        zmq::poll(items, n, std::chrono::milliseconds(timeout_ms));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;  // A signal; its handler has set the stop fd if it matters.
      }
      if (stop_at >= 0 && (items[stop_at].revents & ZMQ_POLLIN)) {
        stopping = true;
        deadline = std::chrono::steady_clock::now() + options_.flags.send.drain_timeout;
      }
      if (acks_at >= 0 && (items[acks_at].revents & ZMQ_POLLIN)) ReadCompletions();
      if (items[outbox_at].revents & ZMQ_POLLIN) {
        back.clear();
        outbox_.TakeAll(back);
        for (const ItemRun& run : back) submitted_ -= run.size();
        Emit(back);  // Packed together: a slow op returns runs of one item.
      }
      if (in_at >= 0 && (items[in_at].revents & ZMQ_POLLIN)) {
        // A few frames at a time, then the other sockets get their turn.
        for (int i = 0; i < 32 && room(); ++i) {
          if (!in_.recv(frame, zmq::recv_flags::dontwait)) break;
          ItemRun run = Spare();
          if (!AcceptFrame(frame, options_.flags.receive.max_frame_bytes, run,
                           counters_.receive, reject_log)) {
            spare_.push_back(std::move(run));
            continue;
          }
          if (acks_ != nullptr) {
            Watch(run);
            if (run.empty()) {
              spare_.push_back(std::move(run));
              continue;
            }
          }
          const size_t size = run.size();
          held_ += size;
          if (Forward(0, run)) {
            // Items an op kept back for a retry are with its threads now.
            submitted_ += size - run.size();
            Emit(std::span<ItemRun>(&run, 1));
          } else {
            submitted_ += size;
          }
        }
      }
    }
    return Status::Ok();
  }

  ItemRun Spare() {
    if (spare_.empty()) return ItemRun();
    ItemRun run = std::move(spare_.back());
    spare_.pop_back();
    return run;
  }

  // Encodes `runs` into frames waiting to be sent, and keeps the runs for
  // reuse.
  void Emit(std::span<ItemRun> runs) {
    gather_.clear();
    size_t late = 0;
    for (const ItemRun& run : runs) {
      for (const Item& item : run) {
        // Done at the sink while the ops had it (--acks): a duplicate.
        if (!complete_.empty() && complete_.count(item.stream)) {
          ++late;
          continue;
        }
        gather_.push_back(&item);
      }
    }
    held_ -= late;
    counters_.late_dropped.Add(late);
    size_t at = 0;  // The first item of the next frame, in gather_.
    (void)PackFrames(std::span<const Item* const>(gather_), options_.flags.send,
                     encoder_, [&](zmq::message_t f, size_t n_items, bool end) {
                       const size_t count = end ? 1 : n_items;
                       std::string stream;
                       if (acks_ != nullptr) stream = FrameStream(at, count);
                       at += count;
                       pending_.push_back({std::move(f), count, end, std::move(stream)});
                       pending_items_ += count;
                       return Status::Ok();
                     });
    for (ItemRun& run : runs) {
      run.Clear();
      if (spare_.size() < kSpareRuns) spare_.push_back(std::move(run));
    }
  }

  // Sends what is pending until the socket would block.
  void Flush() {
    while (!pending_.empty()) {
      Pending& p = pending_.front();
      const size_t bytes = p.frame.size();
      if (!out_.send(p.frame, zmq::send_flags::dontwait)) {
        // Every peer is full (or none is there): the output blocks from now
        // until a frame goes again.
        if (!blocked_since_) blocked_since_ = std::chrono::steady_clock::now();
        return;
      }
      if (blocked_since_) {
        counters_.send.tx_blocked_us.Add(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - *blocked_since_)
                .count()));
        blocked_since_.reset();
      }
      counters_.send.tx_frames.Add();
      counters_.send.tx_bytes.Add(bytes);
      if (p.end) {
        counters_.send.tx_end_of_stream.Add();
      } else {
        counters_.send.tx_items.Add(p.items);
      }
      held_ -= p.items;
      pending_items_ -= p.items;
      pending_.pop_front();
    }
  }

  static constexpr size_t kSpareRuns = 64;

  const StageOptions& options_;
  StopSignal& stop_;
  StageCounters& counters_;
  std::vector<std::unique_ptr<OpRunner>>& runners_;
  Outbox& outbox_;
  zmq::socket_t& in_;
  zmq::socket_t& out_;
  FrameEncoder encoder_;
  std::vector<const Item*> gather_;
  std::vector<ItemRun> spare_;
  std::deque<Pending> pending_;
  size_t pending_items_ = 0;  // Items (and ends) in pending_.
  size_t held_ = 0;           // Received and not yet sent (or given up).
  // Since when the output would not take a frame; unset while it does.
  std::optional<std::chrono::steady_clock::time_point> blocked_since_;
  size_t submitted_ = 0;      // With the op threads.
  uint64_t unsent_ = 0;
  // With --acks: the streams whose acks the stage subscribed to, and those
  // the sink reported complete (at most kMaxWatched each).
  static constexpr size_t kMaxWatched = 4096;
  zmq::socket_t* acks_;
  std::unordered_set<std::string> watched_;
  std::unordered_set<std::string> complete_;
};

}  // namespace

Status RunStage(const StageOptions& options, StopSignal& stop,
                StageCounters& counters, std::ostream& ready_out) {
  // The ops first: a broken one stops the stage before it binds anything.
  std::vector<std::unique_ptr<OpRunner>> runners;
  for (size_t i = 0; i < options.ops.size(); ++i) {
    auto runner = OpRunner::Create(options.ops[i], *options.op_flags,
                                   counters.ops[i]);
    if (!runner.ok()) return runner.status();
    runners.push_back(std::move(*runner));
  }
  Outbox outbox;
  if (outbox.fd() < 0) {
    return Internal(std::string("eventfd: ") + std::strerror(errno));
  }

  zmq::context_t context(1);
  auto guards = ContextGuards::Start(context, options.flags.socket, counters.curve_refused,
                                     counters.handshake_failed);
  if (!guards.ok()) return guards.status();
  StatusOr<OpenedSocket> in = OpenSocket(context, zmq::socket_type::pull,
                                         options.in, guards->For("in"));
  if (!in.ok()) return in.status();
  StatusOr<OpenedSocket> out = OpenSocket(context, zmq::socket_type::push,
                                          options.out, guards->For("out"));
  if (!out.ok()) return out.status();

  std::optional<zmq::socket_t> acks;
  if (!options.acks.empty()) {
    SocketOptions ack_options = guards->For("acks");
    ack_options.linger_ms = 0;  // A SUB socket only ever queues subscriptions.
    StatusOr<OpenedSocket> sub = OpenSocket(context, zmq::socket_type::sub,
                                            options.acks, ack_options);
    if (!sub.ok()) return sub.status();
    acks = std::move(sub->socket);
  }
  StageIo io(options, stop, counters, runners, outbox, in->socket, out->socket,
             acks ? &*acks : nullptr);
  auto stop_runners = [&] {
    for (auto& runner : runners) runner->Close();
    for (auto& runner : runners) runner->Join();
  };
  for (size_t i = 0; i < runners.size(); ++i) {
    Status s = runners[i]->Start([&io, &outbox, i](ItemRun run) {
      if (io.Forward(i + 1, run) && !run.empty()) outbox.Push(std::move(run));
    });
    if (!s.ok()) {
      stop_runners();
      return s;
    }
  }
  ready_out << "READY in=" << DescribeAddresses(options.in, *in)
            << " out=" << DescribeAddresses(options.out, *out) << std::endl;
  spdlog::info("in {} -> out {}", DescribeAddresses(options.in, *in),
               DescribeAddresses(options.out, *out));

  Status status = io.Serve();
  stop_runners();
  in->socket.close();
  out->socket.close();
  if (acks) acks->close();
  guards->Stop();
  bool flushed = TerminateContext(context, options.flags.socket.linger_ms);
  if (!status.ok()) return status;
  if (io.unsent() > 0) {
    return Unavailable(std::to_string(io.unsent()) +
                       " items and end-of-stream markers could not be sent "
                       "within the drain timeout: nobody downstream took them");
  }
  if (!flushed) {
    return Unavailable("frames were still queued after --linger-ms " +
                       std::to_string(options.flags.socket.linger_ms) +
                       ": downstream stopped taking them");
  }
  return Status::Ok();
}

}  // namespace sluice
