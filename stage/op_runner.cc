#include "stage/op_runner.h"

#include "common/thread.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <random>
#include <semaphore>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/log.h"

namespace sluice {

std::string FailureReason(const std::string& message) {
  size_t colon = message.find(':');
  if (colon == 0 || colon == std::string::npos || colon > 32) return "error";
  for (size_t i = 0; i < colon; ++i) {
    char c = message[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      return "error";
    }
  }
  return message.substr(0, colon);
}

std::chrono::microseconds RetryBackoff(std::chrono::milliseconds base,
                                       int retry) {
  thread_local std::mt19937_64 random(std::random_device{}());
  constexpr int64_t kCapUs = 30'000'000;
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(base).count();
  for (int i = 1; i < retry && us < kCapUs; ++i) us *= 2;
  us = std::min(us, kCapUs);
  if (us <= 1) return std::chrono::microseconds(us);
  std::uniform_int_distribution<int64_t> pick(us / 2, us);
  return std::chrono::microseconds(pick(random));
}

std::string WorkerName(std::string_view op, int thread) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + ":" + std::to_string(getpid()) + "/" +
         std::string(op) + "#" + std::to_string(thread);
}

namespace {

bool Retryable(const Status& status) {
  return status.code() == StatusCode::kUnavailable;
}

void MarkFailed(Item& item, const OpPlan& plan, const Status& status,
                int attempts, const std::string& worker) {
  auto failure = std::make_shared<ItemFailure>();
  failure->op = plan.definition->name;
  failure->reason = FailureReason(status.message());
  failure->detail = status.message();
  failure->worker = worker;
  failure->attempts = static_cast<uint32_t>(attempts);
  item.failure = std::move(failure);
  item.more_payloads.clear();
  item.dropped = false;
}

bool Bypasses(const Item& item) { return item.end_of_stream || item.failed(); }

// The op sees each output of a fanned-out item as an item of its own.
void SplitIntoParts(Item& item, std::vector<Item>& parts) {
  auto part = [&](std::string payload) {
    Item& p = parts.emplace_back();
    p.stream = item.stream;
    p.seq = item.seq;
    p.produced_at_us = item.produced_at_us;
    p.payload = std::move(payload);
  };
  part(std::move(item.payload));
  for (std::string& more : item.more_payloads) part(std::move(more));
  item.payload.clear();
  item.more_payloads.clear();
}

// Joins processed parts back into `item`: their outputs in order, or the
// first failure (with the payload that failed).
void JoinParts(Item& item, std::span<Item> parts) {
  item.more_payloads.clear();
  bool any_output = false;
  for (Item& part : parts) {
    if (part.failed()) {
      item.failure = part.failure;
      item.payload = std::move(part.payload);
      item.more_payloads.clear();
      item.dropped = false;
      return;
    }
  }
  for (Item& part : parts) {
    if (part.dropped) continue;
    if (!any_output) {
      item.payload = std::move(part.payload);
      any_output = true;
    } else {
      item.more_payloads.push_back(std::move(part.payload));
    }
    for (std::string& more : part.more_payloads) {
      item.more_payloads.push_back(std::move(more));
    }
  }
  if (!any_output) item.Drop();
}

template <typename Fn>
Status Guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return Transient(std::string("exception: ") + e.what());
  } catch (...) {
    return Transient("exception: (not a std::exception)");
  }
}

// What instance `thread` of the op in `plan` is told about where it runs.
OpContext ContextFor(const OpPlan& plan,
                     const boost::program_options::variables_map& flags,
                     int thread) {
  OpContext c;
  c.name = plan.definition->name;
  c.op_index = plan.index;
  c.thread = thread;
  c.threads = plan.threads;
  c.max_latency = plan.max_latency;
  c.timeout = plan.timeout;
  c.flags = &flags;
  c.worker = WorkerName(plan.definition->name, thread);
  return c;
}

// ItemOp and BatchOp: a pool of threads between two queues.
class SyncRunner : public OpRunner {
 public:
  SyncRunner(const OpPlan& plan, OpCounters& counters)
      : plan_(plan), counters_(counters) {}
  ~SyncRunner() override { Join(); }

  Status Make(const boost::program_options::variables_map& flags) {
    for (int i = 0; i < plan_.threads; ++i) {
      workers_.push_back(std::make_unique<Worker>());
      Worker& w = *workers_.back();
      w.context = ContextFor(plan_, flags, i);
      if (plan_.definition->make_batch && !plan_.definition->make_item) {
        auto op = plan_.definition->make_batch(w.context);
        if (!op.ok()) return op.status();
        w.batch = std::move(*op);
      } else {
        auto op = plan_.definition->make_item(w.context);
        if (!op.ok()) return op.status();
        w.item = std::move(*op);
      }
    }
    return Status::Ok();
  }

  Status Start(BoundedQueue<Item>& in, BoundedQueue<Item>& out) override {
    running_ = plan_.threads;
    for (int i = 0; i < plan_.threads; ++i) {
      auto thread = StartThread("op worker",
                                [this, i, &in, &out] { Work(*workers_[i], in, out); });
      if (!thread.ok()) {
        // The threads that never started will not close `out`.
        if (running_.fetch_sub(plan_.threads - i) == plan_.threads - i) out.Close();
        return thread.status();
      }
      threads_.push_back(std::move(*thread));
    }
    return Status::Ok();
  }

  void Join() override {
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  struct Worker {
    OpContext context;
    std::unique_ptr<ItemOp> item;
    std::unique_ptr<BatchOp> batch;
    std::vector<Item> units;        // What the op is given.
    std::vector<size_t> origin;     // units[i] came from run[origin[i]].
    std::vector<Status> statuses;
    std::vector<int> attempts;
    std::vector<size_t> pending;    // Units still to (re)try.
    std::vector<Item> retry_units;  // Batch retries: the pending units.
    std::vector<Status> retry_statuses;
  };

  void Work(Worker& w, BoundedQueue<Item>& in, BoundedQueue<Item>& out) {
    const size_t run_size =
        plan_.max_latency.count() > 0 && w.item ? 1 : plan_.definition->max_run;
    std::vector<Item> run;
    while (true) {
      run.clear();
      if (in.PopUpTo(run_size, run) == 0) break;  // Closed and drained.
      ProcessRun(w, run);
      if (out.PushAll(run) < run.size()) break;  // Aborting.
    }
    if (running_.fetch_sub(1) == 1) out.Close();
  }

  // Calls the op once per pending unit (ItemOp) or once for all of them
  // (BatchOp), recording each status.
  void Attempt(Worker& w, std::span<Item> units) {
    if (w.item) {
      for (size_t u : w.pending) {
        w.statuses[u] = Guarded([&] { return w.item->Process(units[u]); });
      }
      return;
    }
    if (w.pending.size() == units.size()) {
      std::fill(w.statuses.begin(), w.statuses.end(), Status::Ok());
      Status thrown = Guarded([&] {
        w.batch->ProcessBatch(units, w.statuses);
        return Status::Ok();
      });
      if (!thrown.ok()) std::fill(w.statuses.begin(), w.statuses.end(), thrown);
      return;
    }
    w.retry_units.clear();
    for (size_t u : w.pending) w.retry_units.push_back(std::move(units[u]));
    w.retry_statuses.assign(w.retry_units.size(), Status::Ok());
    Status thrown = Guarded([&] {
      w.batch->ProcessBatch(w.retry_units, w.retry_statuses);
      return Status::Ok();
    });
    for (size_t i = 0; i < w.pending.size(); ++i) {
      units[w.pending[i]] = std::move(w.retry_units[i]);
      w.statuses[w.pending[i]] = thrown.ok() ? std::move(w.retry_statuses[i]) : thrown;
    }
  }

  void ProcessRun(Worker& w, std::vector<Item>& run) {
    // The op works on the run in place, unless some items must not reach it
    // (end-of-stream markers, earlier failures) or must reach it as parts
    // (several outputs): then on units moved out of the run and back.
    const bool in_place = std::none_of(run.begin(), run.end(), [](const Item& item) {
      return Bypasses(item) || !item.more_payloads.empty();
    });
    std::span<Item> units = run;
    if (!in_place) {
      w.units.clear();
      w.origin.clear();
      for (size_t i = 0; i < run.size(); ++i) {
        if (Bypasses(run[i])) continue;
        if (run[i].more_payloads.empty()) {
          w.units.push_back(std::move(run[i]));
          w.origin.push_back(i);
        } else {
          SplitIntoParts(run[i], w.units);
          w.origin.resize(w.units.size(), i);
        }
      }
      units = w.units;
    }
    if (units.empty()) return;
    w.statuses.resize(units.size());
    w.attempts.assign(units.size(), 0);
    w.pending.resize(units.size());
    for (size_t u = 0; u < units.size(); ++u) w.pending[u] = u;

    for (int round = 1;; ++round) {
      Attempt(w, units);
      size_t kept = 0;
      for (size_t u : w.pending) {
        ++w.attempts[u];
        const Status& s = w.statuses[u];
        if (s.ok()) continue;
        if (Retryable(s) && w.attempts[u] <= plan_.retries) {
          w.pending[kept++] = u;
          continue;
        }
        MarkFailed(units[u], plan_, s, w.attempts[u], w.context.worker);
      }
      w.pending.resize(kept);
      if (w.pending.empty()) break;
      counters_.retries.Add(w.pending.size());
      std::this_thread::sleep_for(RetryBackoff(plan_.backoff, round));
    }

    if (!in_place) {  // Put the units back where they came from.
      for (size_t u = 0; u < w.units.size();) {
        size_t i = w.origin[u];
        size_t end = u + 1;
        while (end < w.units.size() && w.origin[end] == i) ++end;
        if (end - u > 1) {  // The parts of a fanned-out item.
          JoinParts(run[i], units.subspan(u, end - u));
        } else {
          run[i] = std::move(w.units[u]);
        }
        u = end;
      }
    }
    uint64_t done = 0, failed = 0, dropped = 0;
    auto count = [&](const Item& item) {
      if (item.failed()) {
        ++failed;
      } else {
        ++done;
        if (item.dropped) ++dropped;
      }
    };
    if (in_place) {
      for (const Item& item : run) count(item);
    } else {
      for (size_t u = 0; u < w.origin.size(); ++u) {
        if (u == 0 || w.origin[u] != w.origin[u - 1]) count(run[w.origin[u]]);
      }
    }
    counters_.processed.Add(done);
    counters_.failed.Add(failed);
    counters_.dropped.Add(dropped);
  }

  const OpPlan plan_;
  OpCounters& counters_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::atomic<int> running_{0};
};

}  // namespace

// AsyncOp: per loop thread, an io_context running the op and a feeder
// thread that takes items from `in` while a slot is free.
class AsyncRunner : public OpRunner {
 public:
  AsyncRunner(const OpPlan& plan, OpCounters& counters)
      : plan_(plan), counters_(counters) {}
  ~AsyncRunner() override { Join(); }

  Status Make(const boost::program_options::variables_map& flags) {
    const size_t k = static_cast<size_t>(plan_.concurrency);
    for (int i = 0; i < plan_.threads; ++i) {
      auto loop = std::make_unique<Loop>(k);
      loop->context = ContextFor(plan_, flags, i);
      loop->context.io = &loop->io;
      auto op = plan_.definition->make_async(loop->context);
      if (!op.ok()) return op.status();
      loop->op = std::move(*op);
      for (size_t s = 0; s < k; ++s) {
        loop->slots.emplace_back(loop->io);
        loop->free.push_back(static_cast<uint32_t>(k - 1 - s));
      }
      loops_.push_back(std::move(loop));
    }
    return Status::Ok();
  }

  Status Start(BoundedQueue<Item>& in, BoundedQueue<Item>& out) override {
    out_ = &out;
    running_ = static_cast<int>(loops_.size());
    for (size_t i = 0; i < loops_.size(); ++i) {
      Loop& loop = *loops_[i];
      auto runner = StartThread("async op loop", [this, &loop] {
        loop.io.run();
        if (running_.fetch_sub(1) == 1) out_->Close();
      });
      StatusOr<std::thread> feeder = Unavailable("");
      if (runner.ok()) {
        loop.runner = std::move(*runner);
        feeder = StartThread("async op feeder",
                             [this, i, &loop, &in] { Feed(i, loop, in); });
      }
      if (!feeder.ok()) {
        const int never = static_cast<int>(loops_.size() - i) - (runner.ok() ? 1 : 0);
        if (runner.ok()) loop.io.stop();  // Its feeder will never feed it.
        if (never > 0 && running_.fetch_sub(never) == never) out.Close();
        return runner.ok() ? feeder.status() : runner.status();
      }
      loop.feeder = std::move(*feeder);
    }
    return Status::Ok();
  }

  void Join() override {
    for (auto& loop : loops_) {
      if (loop->feeder.joinable()) loop->feeder.join();
      if (loop->runner.joinable()) loop->runner.join();
    }
  }

  // Called through Completion, on the loop thread.
  void Complete(uint32_t global_slot, uint32_t generation, Status status) {
    const size_t k = static_cast<size_t>(plan_.concurrency);
    Loop& loop = *loops_[global_slot / k];
    Slot& slot = loop.slots[global_slot % k];
    if (!slot.busy || slot.generation != generation) return;  // Stale.
    ++slot.generation;
    slot.timer.cancel();
    if (!status.ok()) {
      AttemptFailed(loop, global_slot, std::move(status));
      return;
    }
    PartDone(loop, global_slot);
  }

 private:
  struct Slot {
    explicit Slot(boost::asio::io_context& io) : timer(io) {}
    Item item;              // What the op works on (the item, or one part).
    Item origin;            // A fanned-out item while its parts run.
    std::vector<Item> parts;
    size_t next_part = 0;
    int attempts = 0;
    uint32_t generation = 0;
    bool busy = false;
    boost::asio::steady_timer timer;  // Timeout, then retry backoff.
  };
  struct Loop {
    explicit Loop(size_t k) : permits(static_cast<std::ptrdiff_t>(k)) {}
    boost::asio::io_context io{1};
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type>
        guard{io.get_executor()};
    OpContext context;
    std::unique_ptr<AsyncOp> op;
    std::deque<Slot> slots;       // Stable addresses.
    std::vector<uint32_t> free;   // Loop thread only.
    std::counting_semaphore<1 << 30> permits;
    std::thread runner, feeder;
  };

  void Feed(size_t index, Loop& loop, BoundedQueue<Item>& in) {
    const size_t k = static_cast<size_t>(plan_.concurrency);
    while (true) {
      loop.permits.acquire();
      std::optional<Item> item = in.Pop();
      if (!item) {
        loop.permits.release();
        break;
      }
      if (Bypasses(*item)) {
        loop.permits.release();
        if (!out_->Push(std::move(*item))) break;
        continue;
      }
      boost::asio::post(loop.io, [this, index, &loop, item = std::move(*item)]() mutable {
        uint32_t s = loop.free.back();
        loop.free.pop_back();
        Begin(loop, static_cast<uint32_t>(index * plan_.concurrency) + s,
              std::move(item));
      });
    }
    // Wait until every slot is free again, then let the loop run dry.
    for (size_t i = 0; i < k; ++i) loop.permits.acquire();
    boost::asio::post(loop.io, [&loop] { loop.guard.reset(); });
  }

  Slot& SlotOf(Loop& loop, uint32_t global_slot) {
    return loop.slots[global_slot % static_cast<uint32_t>(plan_.concurrency)];
  }

  void Begin(Loop& loop, uint32_t global_slot, Item item) {
    Slot& slot = SlotOf(loop, global_slot);
    slot.busy = true;
    slot.parts.clear();
    slot.next_part = 0;
    if (item.more_payloads.empty()) {
      slot.item = std::move(item);
    } else {
      slot.origin = std::move(item);
      SplitIntoParts(slot.origin, slot.parts);
      slot.item = std::move(slot.parts[0]);
      slot.next_part = 1;
    }
    slot.attempts = 0;
    StartAttempt(loop, global_slot);
  }

  void StartAttempt(Loop& loop, uint32_t global_slot) {
    Slot& slot = SlotOf(loop, global_slot);
    ++slot.attempts;
    const uint32_t generation = ++slot.generation;
    if (plan_.timeout.count() > 0) {
      slot.timer.expires_after(plan_.timeout);
      slot.timer.async_wait([this, &loop, global_slot, generation](
                                const boost::system::error_code& ec) {
        Slot& s = SlotOf(loop, global_slot);
        if (ec || !s.busy || s.generation != generation) return;
        ++s.generation;
        counters_.timeouts.Add();
        loop.op->Cancel(s.item);
        AttemptFailed(loop, global_slot,
                      Transient("timeout: no answer within " +
                                std::to_string(plan_.timeout.count()) + " ms"));
      });
    }
    Status thrown = Guarded([&] {
      loop.op->Start(slot.item, Completion(this, global_slot, generation));
      return Status::Ok();
    });
    if (!thrown.ok()) Complete(global_slot, generation, std::move(thrown));
  }

  void AttemptFailed(Loop& loop, uint32_t global_slot, Status status) {
    Slot& slot = SlotOf(loop, global_slot);
    if (Retryable(status) && slot.attempts <= plan_.retries) {
      counters_.retries.Add();
      const uint32_t generation = ++slot.generation;
      slot.timer.expires_after(RetryBackoff(plan_.backoff, slot.attempts));
      slot.timer.async_wait([this, &loop, global_slot, generation](
                                const boost::system::error_code& ec) {
        Slot& s = SlotOf(loop, global_slot);
        if (ec || !s.busy || s.generation != generation) return;
        StartAttempt(loop, global_slot);
      });
      return;
    }
    MarkFailed(slot.item, plan_, status, slot.attempts, loop.context.worker);
    if (!slot.parts.empty()) {
      slot.parts[slot.next_part - 1] = std::move(slot.item);
      slot.parts.resize(slot.next_part);
      JoinParts(slot.origin, slot.parts);
      slot.item = std::move(slot.origin);
    }
    Finish(loop, global_slot);
  }

  void PartDone(Loop& loop, uint32_t global_slot) {
    Slot& slot = SlotOf(loop, global_slot);
    if (!slot.parts.empty()) {
      slot.parts[slot.next_part - 1] = std::move(slot.item);
      if (slot.next_part < slot.parts.size()) {
        slot.item = std::move(slot.parts[slot.next_part++]);
        slot.attempts = 0;
        StartAttempt(loop, global_slot);
        return;
      }
      JoinParts(slot.origin, slot.parts);
      slot.item = std::move(slot.origin);
    }
    Finish(loop, global_slot);
  }

  void Finish(Loop& loop, uint32_t global_slot) {
    Slot& slot = SlotOf(loop, global_slot);
    if (slot.item.failed()) {
      counters_.failed.Add();
    } else {
      counters_.processed.Add();
      if (slot.item.dropped) counters_.dropped.Add();
    }
    slot.busy = false;
    ++slot.generation;
    // Blocks while the next queue is full: that is the backpressure.
    (void)out_->Push(std::move(slot.item));
    slot.item = Item();
    loop.free.push_back(global_slot % static_cast<uint32_t>(plan_.concurrency));
    loop.permits.release();
  }

  const OpPlan plan_;
  OpCounters& counters_;
  std::vector<std::unique_ptr<Loop>> loops_;
  BoundedQueue<Item>* out_ = nullptr;
  std::atomic<int> running_{0};
};

void Completion::operator()(Status status) const {
  runner_->Complete(slot_, generation_, std::move(status));
}

StatusOr<std::unique_ptr<OpRunner>> OpRunner::Create(
    const OpPlan& plan, const boost::program_options::variables_map& flags,
    OpCounters& counters) {
  if (plan.concurrency > 0) {
    auto runner = std::make_unique<AsyncRunner>(plan, counters);
    Status s = runner->Make(flags);
    if (!s.ok()) return s;
    return std::unique_ptr<OpRunner>(std::move(runner));
  }
  auto runner = std::make_unique<SyncRunner>(plan, counters);
  Status s = runner->Make(flags);
  if (!s.ok()) return s;
  return std::unique_ptr<OpRunner>(std::move(runner));
}

}  // namespace sluice
