#include "stage/op_runner.h"

#include "common/thread.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <semaphore>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/log.h"
#include "stage/cost_meter.h"

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

OpCounter& OpCounters::Counter(std::string_view name) {
  std::lock_guard<std::mutex> lock(named_mu_);
  for (auto& [n, counter] : named_) {
    if (n == name) return counter;
  }
  return named_.emplace_back(std::piecewise_construct,
                             std::forward_as_tuple(name), std::tuple<>())
      .second;
}

void OpCounters::AppendNamed(nlohmann::json& out, const std::string& suffix) const {
  std::lock_guard<std::mutex> lock(named_mu_);
  for (const auto& [name, counter] : named_) out[name + suffix] = counter.value();
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

// Adds `elapsed` to one of an item's saturating microsecond counters
// (Item::queued_us, Item::op_us).
void AddMicros(uint32_t& field, std::chrono::steady_clock::duration elapsed) {
  const int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count();
  if (us <= 0) return;
  field = static_cast<uint32_t>(
      std::min<uint64_t>(uint64_t{field} + static_cast<uint64_t>(us), UINT32_MAX));
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
                     int thread, OpCounters& counters) {
  OpContext c;
  c.metrics = &counters;
  c.name = plan.definition->name;
  c.op_index = plan.index;
  c.thread = thread;
  c.threads = plan.threads;
  c.max_latency = plan.max_latency;
  c.timeout = plan.timeout;
  c.batch = plan.batch;
  c.batch_wait = plan.batch_wait;
  c.flags = &flags;
  c.worker = WorkerName(plan.definition->name, thread);
  return c;
}

// An item taken out of its run to wait for another attempt, off the thread
// that tried it. A fanned-out item waits with its parts (the op's units):
// parts already done keep their outputs, and only the others are tried
// again.
struct Waiting {
  Item item;                  // Its payloads are in `parts` when it has any.
  std::vector<Item> parts;    // Empty: the op works on `item` itself.
  std::vector<uint8_t> again;  // parts[p] needs another attempt.
};

// The items of one claim (or one inline run) that need another attempt,
// due together after one backoff.
struct RetryGroup {
  std::vector<Waiting> items;
  int attempts = 0;  // Attempts already made on each unit that waits.
  std::chrono::steady_clock::time_point due;
};

// Removes the items at `taken` (ascending positions) from `run`, keeping
// the order of the rest.
void RemoveTaken(ItemRun& run, const std::vector<size_t>& taken) {
  if (taken.empty()) return;
  size_t out = 0, k = 0;
  for (size_t i = 0; i < run.size(); ++i) {
    if (k < taken.size() && taken[k] == i) {
      ++k;
      continue;
    }
    if (out != i) run[out] = std::move(run[i]);
    ++out;
  }
  run.Truncate(out);
}

// The work of a runner, shared by its threads: the submitted runs, of
// which each thread claims a chunk of items of the oldest, and the groups
// of items waiting for a retry, each claimed whole once due. A run moves
// on once every chunk of it is done, without the items taken out of it to
// wait. Idle threads double as the timer: one of them waits until the
// earliest group is due, the others until work comes.
class TaskQueue {
 public:
  using Clock = std::chrono::steady_clock;
  struct Task {
    ItemRun run;
    size_t next = 0;             // First unclaimed item. Guarded by mu_.
    std::atomic<size_t> left{0};  // Items not yet done.
    Clock::time_point pushed_at;  // Set before Push().
    std::mutex taken_mu;
    // Positions of items moved out to wait for a retry, ascending once
    // sorted. Guarded by taken_mu.
    std::vector<size_t> taken;
  };
  // A chunk of a run, or (retry set) a group due for another attempt.
  struct Claim {
    Task* task = nullptr;
    size_t begin = 0, end = 0;
    std::unique_ptr<RetryGroup> retry;
    std::span<Item> items() const {
      return task->run.items().subspan(begin, end - begin);
    }
  };

  ~TaskQueue() {
    for (Task* t : tasks_) delete t;
  }

  void Push(ItemRun run) {
    auto* task = new Task;
    task->left = run.size();
    task->pushed_at = Clock::now();
    task->run = std::move(run);
    std::unique_lock<std::mutex> lock(mu_);
    tasks_.push_back(task);
    const bool wake = idle_ > 0;
    const bool wake_timer = !wake && timer_;
    lock.unlock();
    if (wake) ready_.notify_one();
    if (wake_timer) timer_cv_.notify_one();
  }

  // Queues `group` until its due time. Never blocks on the op.
  void Delay(std::unique_ptr<RetryGroup> group) {
    std::unique_lock<std::mutex> lock(mu_);
    const Clock::time_point due = group->due;
    delayed_.push_back(std::move(group));
    std::push_heap(delayed_.begin(), delayed_.end(), Later);
    const bool wake_timer = timer_ && due < timer_until_;
    const bool wake = !timer_ && idle_ > 0;  // One of them becomes the timer.
    lock.unlock();
    if (wake_timer) timer_cv_.notify_one();
    if (wake) ready_.notify_one();
  }

  // Claims a group that is due, else up to `chunk` items of the oldest run,
  // waiting while there is neither; nullopt once closed and nothing is
  // left: no run, no group waiting, and no claim being worked on (which
  // could still delay items). `released`: the caller is done with its
  // previous claim.
  std::optional<Claim> Take(size_t chunk, bool released) {
    std::unique_lock<std::mutex> lock(mu_);
    if (released && --busy_ == 0 && closed_) {
      ready_.notify_all();
      timer_cv_.notify_all();
    }
    std::optional<Claim> claim;
    while (true) {
      if (!delayed_.empty() && delayed_.front()->due <= Clock::now()) {
        std::pop_heap(delayed_.begin(), delayed_.end(), Later);
        claim.emplace();
        claim->retry = std::move(delayed_.back());
        delayed_.pop_back();
        // Other groups due by now and as often tried go along, up to a
        // chunk: items retried one by one would travel on as frames of one.
        RetryGroup& group = *claim->retry;
        const Clock::time_point now = Clock::now();
        while (!delayed_.empty() && delayed_.front()->due <= now &&
               delayed_.front()->attempts == group.attempts &&
               group.items.size() + delayed_.front()->items.size() <= chunk) {
          std::pop_heap(delayed_.begin(), delayed_.end(), Later);
          for (Waiting& w : delayed_.back()->items) group.items.push_back(std::move(w));
          delayed_.pop_back();
        }
        break;
      }
      if (!tasks_.empty()) {
        Task* task = tasks_.front();
        claim.emplace();
        claim->task = task;
        claim->begin = task->next;
        claim->end = task->next + std::min(task->run.size() - task->next, chunk);
        task->next = claim->end;
        if (claim->end == task->run.size()) tasks_.pop_front();
        break;
      }
      if (closed_ && delayed_.empty() && busy_ == 0) return std::nullopt;
      if (!delayed_.empty() && !timer_) {
        timer_ = true;
        timer_until_ = delayed_.front()->due;
        timer_cv_.wait_until(lock, timer_until_);
        timer_ = false;
      } else {
        ++idle_;
        ready_.wait(lock);
        --idle_;
      }
    }
    ++busy_;
    // Work is left, or the timer's place is free, and someone waits: pass
    // the baton.
    const bool wake = idle_ > 0 && (!tasks_.empty() || (!delayed_.empty() && !timer_));
    const bool wake_timer = !wake && timer_ && !tasks_.empty();
    lock.unlock();
    if (wake) ready_.notify_one();
    if (wake_timer) timer_cv_.notify_one();
    return claim;
  }

  // Marks `n` items of `task` done; returns its run, without the items
  // taken out of it, if they were the last.
  static std::optional<ItemRun> Done(Task* task, size_t n) {
    if (task->left.fetch_sub(n) != n) return std::nullopt;
    ItemRun run = std::move(task->run);
    {
      std::lock_guard<std::mutex> lock(task->taken_mu);
      std::sort(task->taken.begin(), task->taken.end());
      RemoveTaken(run, task->taken);
    }
    delete task;
    return run;
  }

  // No more Push(); Take() ends once everything is done, retries included.
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    ready_.notify_all();
    timer_cv_.notify_all();
  }

 private:
  static bool Later(const std::unique_ptr<RetryGroup>& a,
                    const std::unique_ptr<RetryGroup>& b) {
    return a->due > b->due;
  }

  std::mutex mu_;
  std::condition_variable ready_;     // Idle threads wait here.
  std::condition_variable timer_cv_;  // The timer thread waits here.
  std::deque<Task*> tasks_;  // Runs with unclaimed items. Guarded by mu_.
  // Groups waiting for their retry, a min-heap on due. Guarded by mu_.
  std::vector<std::unique_ptr<RetryGroup>> delayed_;
  int idle_ = 0;   // Threads waiting on ready_. Guarded by mu_.
  int busy_ = 0;   // Claims being worked on. Guarded by mu_.
  bool timer_ = false;  // A thread waits on timer_cv_. Guarded by mu_.
  Clock::time_point timer_until_;  // Until when it waits. Guarded by mu_.
  bool closed_ = false;  // Guarded by mu_.
};

// Queues `run` as runs of `chunk` items (the last may be shorter).
void SplitAndPush(ItemRun run, size_t chunk, TaskQueue& tasks) {
  for (size_t at = 0; at < run.size(); at += chunk) {
    ItemRun part;
    for (size_t i = at; i < std::min(run.size(), at + chunk); ++i) {
      part.Append(std::move(run[i]));
    }
    tasks.Push(std::move(part));
  }
}

// ItemOp and BatchOp: a pool of threads sharing the submitted runs.
class SyncRunner : public OpRunner {
 public:
  SyncRunner(const OpPlan& plan, OpCounters& counters)
      : plan_(plan), counters_(counters), cost_(plan.max_latency) {}
  ~SyncRunner() override {
    Close();
    Join();
  }

  Status Make(const boost::program_options::variables_map& flags) {
    flags_ = &flags;
    for (int i = 0; i < plan_.threads; ++i) {
      StatusOr<std::unique_ptr<Worker>> w = MakeWorker(i);
      if (!w.ok()) return w.status();
      workers_.push_back(std::move(*w));
    }
    return Status::Ok();
  }

  Status Start(Forward forward) override {
    forward_ = std::move(forward);
    for (int i = 0; i < plan_.threads; ++i) {
      auto thread = StartThread("op worker", [this, i] { Work(*workers_[i]); });
      if (!thread.ok()) return thread.status();
      threads_.push_back(std::move(*thread));
    }
    return Status::Ok();
  }

  void Submit(ItemRun run) override {
    const size_t chunk = Chunk();
    if (chunk >= run.size()) {
      tasks_.Push(std::move(run));
      return;
    }
    // A slow op: each chunk travels on as soon as it is done, instead of
    // waiting for the slowest item of the frame it came in.
    SplitAndPush(std::move(run), chunk, tasks_);
  }

  bool cheap() const override {
    return cost_.cheap() && !inline_failed_.load(std::memory_order_relaxed);
  }

  bool InlineFor(size_t items) const override {
    return (cost_.cheap() || cost_.CheaperThanHandOff(items)) &&
           !inline_failed_.load(std::memory_order_relaxed);
  }

  bool RunInline(ItemRun& run) override {
    Worker* w = InlineWorker();
    if (w == nullptr) return false;
    w->taken.clear();
    Process(*w, run.items(), /*stamp=*/false, w->taken);
    RemoveTaken(run, w->taken);
    return true;
  }

  size_t waiting() const override { return waiting_.load(std::memory_order_relaxed); }

  void Close() override { tasks_.Close(); }

  void Join() override {
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  struct Worker;
  StatusOr<std::unique_ptr<Worker>> MakeWorker(int thread) {
    auto w = std::make_unique<Worker>();
    w->context = ContextFor(plan_, *flags_, thread, counters_);
    if (plan_.definition->make_batch && !plan_.definition->make_item) {
      auto op = plan_.definition->make_batch(w->context);
      if (!op.ok()) return op.status();
      w->batch = std::move(*op);
    } else {
      auto op = plan_.definition->make_item(w->context);
      if (!op.ok()) return op.status();
      w->item = std::move(*op);
    }
    return w;
  }

  // The calling thread's own instance, for RunInline(): the stage's I/O
  // thread and the threads of earlier ops in the chain (which run a cheap
  // op where the run is) each get one, made on first use and numbered
  // from `threads` up, so that no instance is ever used by two threads.
  // nullptr if the op cannot make one (cheap() is false from then on).
  Worker* InlineWorker() {
    const std::thread::id self = std::this_thread::get_id();
    std::lock_guard<std::mutex> lock(inline_mu_);
    for (auto& [id, worker] : inline_workers_) {
      if (id == self) return worker.get();
    }
    if (inline_failed_.load(std::memory_order_relaxed)) return nullptr;
    const int number = plan_.threads + static_cast<int>(inline_workers_.size());
    StatusOr<std::unique_ptr<Worker>> w = MakeWorker(number);
    if (!w.ok()) {
      spdlog::warn("op {}: no instance for a thread that runs it where its "
                   "items are ({}); the op stays on its worker threads",
                   plan_.definition->name, w.status().message());
      inline_failed_ = true;
      return nullptr;
    }
    inline_workers_.emplace_back(self, std::move(*w));
    return inline_workers_.back().second.get();
  }

  struct Worker {
    OpContext context;
    std::unique_ptr<ItemOp> item;
    std::unique_ptr<BatchOp> batch;
    std::vector<Item> units;        // What the op is given.
    std::vector<size_t> origin;     // units[i] came from run[origin[i]].
    std::vector<Status> statuses;
    std::vector<uint8_t> fate;      // Per unit: kDone, kAgain or kTakenOut.
    std::vector<size_t> taken;      // Run positions moved out to wait.
  };
  static constexpr uint8_t kDone = 0;      // Succeeded, or failed for good.
  static constexpr uint8_t kAgain = 1;     // Wants another attempt.
  static constexpr uint8_t kTakenOut = 2;  // Its item waits for a retry.

  // Items a thread claims at once: a whole run while the op is cheap; else
  // one item (an ItemOp) or one call's worth (a BatchOp's max_run), so that
  // the threads share a run's items and none sits on work the others could
  // do.
  size_t Chunk() const {
    if (cost_.cheap()) return SIZE_MAX;
    if (!workers_.empty() && workers_[0]->batch) {
      return std::max<size_t>(1, plan_.definition->max_run);
    }
    return 1;
  }

  size_t Slice() const {
    return plan_.definition->make_batch && !plan_.definition->make_item
               ? std::max<size_t>(1, plan_.definition->max_run)
               : SIZE_MAX;
  }

  void Work(Worker& w) {
    bool released = false;
    while (std::optional<TaskQueue::Claim> claim =
               tasks_.Take(Chunk(), std::exchange(released, true))) {
      if (claim->retry) {
        waiting_.fetch_sub(claim->retry->items.size(), std::memory_order_relaxed);
        Retry(w, std::move(claim->retry));
        continue;
      }
      // The items' time in this stage, for the producer's flow control:
      // waiting since the run was submitted, then in the op.
      const auto claimed = std::chrono::steady_clock::now();
      for (Item& item : claim->items()) {
        AddMicros(item.queued_us, claimed - claim->task->pushed_at);
      }
      w.taken.clear();
      Process(w, claim->items(), /*stamp=*/true, w.taken);
      if (!w.taken.empty()) {
        std::lock_guard<std::mutex> lock(claim->task->taken_mu);
        for (size_t i : w.taken) claim->task->taken.push_back(claim->begin + i);
      }
      std::optional<ItemRun> done =
          TaskQueue::Done(claim->task, claim->end - claim->begin);
      if (done && !done->empty()) forward_(std::move(*done));
    }
  }

  // Runs the op once over `run` in slices of at most max_run items (a
  // BatchOp's most per call), timing it; with `stamp`, adds each slice's
  // time per item to the items' op_us. Items that need another attempt are
  // moved out to wait for it; their positions in `run` go to `taken`,
  // ascending, for the caller to remove.
  void Process(Worker& w, std::span<Item> run, bool stamp,
               std::vector<size_t>& taken) {
    const size_t slice = Slice();
    for (size_t at = 0; at < run.size(); at += slice) {
      std::span<Item> part = run.subspan(at, std::min(slice, run.size() - at));
      const auto started = std::chrono::steady_clock::now();
      const size_t worked = ProcessRun(w, part, at, taken);
      const auto elapsed = std::chrono::steady_clock::now() - started;
      cost_.Add(elapsed, worked);
      if (stamp) {
        for (Item& item : part) AddMicros(item.op_us, elapsed / part.size());
      }
    }
  }

  // Calls the op once per unit (ItemOp) or once per slice of them
  // (BatchOp), recording each status in w.statuses.
  void Attempt(Worker& w, std::span<Item> units) {
    w.statuses.assign(units.size(), Status::Ok());
    if (w.item) {
      for (size_t u = 0; u < units.size(); ++u) {
        w.statuses[u] = Guarded([&] { return w.item->Process(units[u]); });
      }
      return;
    }
    const size_t slice = Slice();
    for (size_t at = 0; at < units.size(); at += slice) {
      const size_t n = std::min(slice, units.size() - at);
      std::span<Status> statuses(w.statuses.data() + at, n);
      Status thrown = Guarded([&] {
        w.batch->ProcessBatch(units.subspan(at, n), statuses);
        return Status::Ok();
      });
      if (!thrown.ok()) std::fill(statuses.begin(), statuses.end(), thrown);
    }
  }

  // What becomes of a unit after attempt number `attempts`: done (or
  // failed for good, marked), or another attempt.
  uint8_t Judge(Worker& w, Item& unit, const Status& status, int attempts) {
    if (status.ok()) return kDone;
    if (Retryable(status) && attempts <= plan_.retries) return kAgain;
    MarkFailed(unit, plan_, status, attempts, w.context.worker);
    return kDone;
  }

  // Counts a finished item.
  void Count(const Item& item, uint64_t& done, uint64_t& failed, uint64_t& dropped) {
    if (item.failed()) {
      ++failed;
    } else {
      ++done;
      if (item.dropped) ++dropped;
    }
  }

  // Processes `run` in place (its items at `base` of what Process() was
  // given); returns how many units the op was given.
  size_t ProcessRun(Worker& w, std::span<Item> run, size_t base,
                    std::vector<size_t>& taken) {
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
    if (units.empty()) return 0;
    Attempt(w, units);
    w.fate.resize(units.size());
    size_t again = 0;
    for (size_t u = 0; u < units.size(); ++u) {
      w.fate[u] = Judge(w, units[u], w.statuses[u], 1);
      if (w.fate[u] == kAgain) ++again;
    }
    std::unique_ptr<RetryGroup> group;
    if (again > 0) group = TakeOut(w, run, units, in_place, base, taken);

    const size_t given = units.size();
    uint64_t done = 0, failed = 0, dropped = 0;
    if (in_place) {
      for (size_t u = 0; u < units.size(); ++u) {
        if (w.fate[u] != kTakenOut) Count(run[u], done, failed, dropped);
      }
    } else {  // Put the units back where they came from.
      for (size_t u = 0; u < w.units.size();) {
        size_t i = w.origin[u];
        size_t end = u + 1;
        while (end < w.units.size() && w.origin[end] == i) ++end;
        if (w.fate[u] != kTakenOut) {
          if (end - u > 1) {  // The parts of a fanned-out item.
            JoinParts(run[i], units.subspan(u, end - u));
          } else {
            run[i] = std::move(w.units[u]);
          }
          Count(run[i], done, failed, dropped);
        }
        u = end;
      }
    }
    counters_.processed.Add(done);
    counters_.failed.Add(failed);
    counters_.dropped.Add(dropped);
    if (group) Delay(std::move(group));
    return given;
  }

  // Moves the items that want another attempt (and none of whose parts
  // failed for good) out of `run` into a group; marks their units
  // kTakenOut and appends their positions (+ base) to `taken`.
  std::unique_ptr<RetryGroup> TakeOut(Worker& w, std::span<Item> run,
                                      std::span<Item> units, bool in_place,
                                      size_t base, std::vector<size_t>& taken) {
    auto group = std::make_unique<RetryGroup>();
    group->attempts = 1;
    if (in_place) {
      for (size_t u = 0; u < units.size(); ++u) {
        if (w.fate[u] != kAgain) continue;
        group->items.push_back({std::move(run[u]), {}, {}});
        w.fate[u] = kTakenOut;
        taken.push_back(base + u);
      }
      return group;
    }
    for (size_t u = 0; u < w.units.size();) {
      const size_t i = w.origin[u];
      size_t end = u + 1;
      while (end < w.units.size() && w.origin[end] == i) ++end;
      bool wants = false, lost = false;
      for (size_t p = u; p < end; ++p) {
        wants = wants || w.fate[p] == kAgain;
        lost = lost || units[p].failed();
      }
      if (wants && !lost) {
        Waiting& waiting = group->items.emplace_back();
        if (end - u == 1) {
          waiting.item = std::move(units[u]);
        } else {  // A fanned-out item: its parts wait with it.
          waiting.item = std::move(run[i]);
          for (size_t p = u; p < end; ++p) {
            waiting.parts.push_back(std::move(units[p]));
            waiting.again.push_back(w.fate[p] == kAgain);
          }
        }
        for (size_t p = u; p < end; ++p) w.fate[p] = kTakenOut;
        taken.push_back(base + i);
      }
      u = end;
    }
    return group;
  }

  // Schedules `group`'s next attempt after the backoff: the items wait in
  // the task queue, and whichever thread is free when they are due tries
  // them. Nothing waits on the thread that tried them.
  void Delay(std::unique_ptr<RetryGroup> group) {
    size_t units = 0;
    for (const Waiting& waiting : group->items) {
      units += waiting.parts.empty()
                   ? 1
                   : static_cast<size_t>(std::count(waiting.again.begin(),
                                                    waiting.again.end(), 1));
    }
    counters_.retries.Add(units);
    waiting_.fetch_add(group->items.size(), std::memory_order_relaxed);
    group->due = std::chrono::steady_clock::now() +
                 RetryBackoff(plan_.backoff, group->attempts);
    // Due times on a 1 ms grid (for backoffs of 8 ms and more): groups due
    // within the same millisecond are then tried together, and their items
    // leave as one run.
    if (plan_.backoff >= std::chrono::milliseconds(8)) {
      constexpr auto kGrid = std::chrono::milliseconds(1);
      const auto since = group->due.time_since_epoch();
      group->due += (kGrid - since % kGrid) % kGrid;
    }
    tasks_.Delay(std::move(group));
  }

  // Another attempt on a group that is due: what is then done (succeeded,
  // or failed for good) travels on as one run; what wants yet another
  // attempt waits again.
  void Retry(Worker& w, std::unique_ptr<RetryGroup> group) {
    const int attempts = group->attempts + 1;
    w.units.clear();
    for (Waiting& waiting : group->items) {
      if (waiting.parts.empty()) {
        w.units.push_back(std::move(waiting.item));
        continue;
      }
      for (size_t p = 0; p < waiting.parts.size(); ++p) {
        if (waiting.again[p]) w.units.push_back(std::move(waiting.parts[p]));
      }
    }
    const auto started = std::chrono::steady_clock::now();
    Attempt(w, w.units);
    const auto elapsed = std::chrono::steady_clock::now() - started;
    cost_.Add(elapsed, w.units.size());
    const auto per_unit = elapsed / w.units.size();

    auto next = std::make_unique<RetryGroup>();
    next->attempts = attempts;
    ItemRun out;
    uint64_t done = 0, failed = 0, dropped = 0;
    size_t u = 0;
    for (Waiting& waiting : group->items) {
      bool wants = false, lost = false;
      if (waiting.parts.empty()) {
        waiting.item = std::move(w.units[u]);
        wants = Judge(w, waiting.item, w.statuses[u], attempts) == kAgain;
        ++u;
      } else {
        for (size_t p = 0; p < waiting.parts.size(); ++p) {
          if (!waiting.again[p]) continue;
          waiting.parts[p] = std::move(w.units[u]);
          waiting.again[p] = Judge(w, waiting.parts[p], w.statuses[u], attempts) == kAgain;
          wants = wants || waiting.again[p];
          lost = lost || waiting.parts[p].failed();
          AddMicros(waiting.item.op_us, per_unit);
          ++u;
        }
      }
      if (waiting.parts.empty()) AddMicros(waiting.item.op_us, per_unit);
      if (wants && !lost) {
        next->items.push_back(std::move(waiting));
        continue;
      }
      if (!waiting.parts.empty()) JoinParts(waiting.item, waiting.parts);
      Count(waiting.item, done, failed, dropped);
      out.Append(std::move(waiting.item));
    }
    counters_.processed.Add(done);
    counters_.failed.Add(failed);
    counters_.dropped.Add(dropped);
    if (!next->items.empty()) Delay(std::move(next));
    if (!out.empty()) forward_(std::move(out));
  }

  const OpPlan plan_;
  OpCounters& counters_;
  CostMeter cost_;
  const boost::program_options::variables_map* flags_ = nullptr;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  TaskQueue tasks_;
  Forward forward_;
  std::mutex inline_mu_;
  // The instances of the threads that called RunInline(). Guarded by
  // inline_mu_ (each Worker is then used by its thread alone).
  std::vector<std::pair<std::thread::id, std::unique_ptr<Worker>>> inline_workers_;
  std::atomic<bool> inline_failed_{false};
  std::atomic<size_t> waiting_{0};  // Items in groups waiting for a retry.
};

}  // namespace

// AsyncOp: per loop thread, an io_context running the op; submitted runs
// are posted to the loop, which starts items while a slot is free.
class AsyncRunner : public OpRunner {
 public:
  AsyncRunner(const OpPlan& plan, OpCounters& counters)
      : plan_(plan), counters_(counters) {}
  ~AsyncRunner() override {
    Close();
    Join();
  }

  Status Make(const boost::program_options::variables_map& flags) {
    const size_t k = static_cast<size_t>(plan_.concurrency);
    for (int i = 0; i < plan_.threads; ++i) {
      auto loop = std::make_unique<Loop>(static_cast<uint32_t>(i));
      loop->context = ContextFor(plan_, flags, i, counters_);
      loop->context.io = &loop->io;
      loop->context.concurrency = plan_.concurrency;
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

  Status Start(Forward forward) override {
    forward_ = std::move(forward);
    for (size_t i = 0; i < loops_.size(); ++i) {
      Loop& loop = *loops_[i];
      auto runner = StartThread("async op loop", [&loop] { loop.io.run(); });
      if (!runner.ok()) return runner.status();
      loop.runner = std::move(*runner);
    }
    return Status::Ok();
  }

  // The whole run goes to the loop with the fewest items waiting: one
  // wake-up of that loop per run, not per item.
  void Submit(ItemRun run) override {
    Loop* loop = loops_.front().get();
    for (auto& l : loops_) {
      if (l->waiting.load(std::memory_order_relaxed) <
          loop->waiting.load(std::memory_order_relaxed)) {
        loop = l.get();
      }
    }
    loop->waiting.fetch_add(run.size(), std::memory_order_relaxed);
    bool post = false;
    {
      std::lock_guard<std::mutex> lock(loop->mu);
      loop->inbox.push_back({std::move(run), 0, std::chrono::steady_clock::now()});
      post = !std::exchange(loop->drain_posted, true);
    }
    if (post) boost::asio::post(loop->io, [this, loop] { Drain(*loop); });
  }

  void Close() override {
    for (auto& l : loops_) {
      Loop* loop = l.get();
      {
        std::lock_guard<std::mutex> lock(loop->mu);
        if (std::exchange(loop->closed, true)) continue;
      }
      boost::asio::post(loop->io, [this, loop] { MaybeEnd(*loop); });
    }
  }

  void Join() override {
    for (auto& loop : loops_) {
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
    std::chrono::steady_clock::time_point began;  // For Item::op_us.
    boost::asio::steady_timer timer;  // Timeout, then retry backoff.
  };
  // A submitted run, its items taken into slots front to back.
  struct Inbound {
    ItemRun run;
    size_t next = 0;
    std::chrono::steady_clock::time_point pushed_at;  // For Item::queued_us.
  };
  // One event loop: its thread runs the op's starts, completions, timers,
  // and takes submitted runs; finished items leave in runs, one per round
  // of the loop, so that the stage's I/O thread wakes once per round.
  struct Loop {
    explicit Loop(uint32_t i) : index(i) {}
    const uint32_t index;  // In loops_.
    boost::asio::io_context io{1};
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type>
        guard{io.get_executor()};
    OpContext context;
    std::unique_ptr<AsyncOp> op;
    std::deque<Slot> slots;       // Stable addresses.
    std::thread runner;
    std::atomic<size_t> waiting{0};  // Submitted items not yet in a slot.
    std::mutex mu;
    std::deque<Inbound> inbox;   // Guarded by mu.
    bool drain_posted = false;   // Guarded by mu.
    bool closed = false;         // Guarded by mu.
    // The loop thread's own:
    std::vector<uint32_t> free;  // Free slots.
    std::deque<Inbound> taken;   // Runs moved out of the inbox.
    ItemRun done;                // Finished items, not yet passed on.
    std::vector<ItemRun> spare;  // Emptied runs, reused for `done`.
    bool flush_posted = false;
    bool ended = false;
  };

  // On the loop thread: takes what was submitted, starts what fits.
  void Drain(Loop& loop) {
    {
      std::lock_guard<std::mutex> lock(loop.mu);
      loop.drain_posted = false;
      for (Inbound& in : loop.inbox) loop.taken.push_back(std::move(in));
      loop.inbox.clear();
    }
    Pump(loop);
  }

  // Starts items while a slot is free; items that bypass the op go
  // straight to the finished run.
  void Pump(Loop& loop) {
    const auto k = static_cast<uint32_t>(plan_.concurrency);
    while (!loop.taken.empty()) {
      Inbound& in = loop.taken.front();
      if (in.next < in.run.size()) {
        Item& item = in.run[in.next];
        if (!Bypasses(item) && loop.free.empty()) break;
        ++in.next;
        loop.waiting.fetch_sub(1, std::memory_order_relaxed);
        if (Bypasses(item)) {
          Deliver(loop, std::move(item));
        } else {
          const uint32_t s = loop.free.back();
          loop.free.pop_back();
          Begin(loop, loop.index * k + s, item, in.pushed_at);
        }
      }
      if (in.next == in.run.size()) {
        in.run.Clear();
        if (loop.spare.size() < kSpareRuns) loop.spare.push_back(std::move(in.run));
        loop.taken.pop_front();
      }
    }
    MaybeEnd(loop);
  }

  // Adds a finished item to the run that leaves at the end of this round
  // of the loop (or at once, when it is full).
  void Deliver(Loop& loop, Item&& item) {
    loop.done.Append(std::move(item));
    if (loop.done.size() >= kDoneRunItems) {
      FlushDone(loop);
    } else if (!std::exchange(loop.flush_posted, true)) {
      boost::asio::post(loop.io, [this, &loop] {
        loop.flush_posted = false;
        FlushDone(loop);
        MaybeEnd(loop);
      });
    }
  }

  void FlushDone(Loop& loop) {
    if (loop.done.empty()) return;
    ItemRun out = std::move(loop.done);
    if (!loop.spare.empty()) {
      loop.done = std::move(loop.spare.back());
      loop.spare.pop_back();
    }
    forward_(std::move(out));
  }

  // After Close(): once nothing is waiting, running or unsent, lets the
  // loop run dry (its thread then returns).
  void MaybeEnd(Loop& loop) {
    if (loop.ended || !loop.taken.empty() ||
        loop.free.size() != static_cast<size_t>(plan_.concurrency)) {
      return;
    }
    {
      std::lock_guard<std::mutex> lock(loop.mu);
      if (!loop.closed || !loop.inbox.empty()) return;
    }
    FlushDone(loop);
    loop.ended = true;
    loop.guard.reset();
    // Waits the op may still have pending (an idle connection, a timer of
    // its own) are abandoned, not run: no item depends on them.
    loop.io.stop();
  }

  Slot& SlotOf(Loop& loop, uint32_t global_slot) {
    return loop.slots[global_slot % static_cast<uint32_t>(plan_.concurrency)];
  }

  void Begin(Loop& loop, uint32_t global_slot, Item& item,
             std::chrono::steady_clock::time_point pushed_at) {
    Slot& slot = SlotOf(loop, global_slot);
    slot.busy = true;
    slot.parts.clear();
    slot.next_part = 0;
    slot.began = std::chrono::steady_clock::now();
    AddMicros(item.queued_us, slot.began - pushed_at);
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
    AddMicros(slot.item.op_us, std::chrono::steady_clock::now() - slot.began);
    loop.free.push_back(global_slot % static_cast<uint32_t>(plan_.concurrency));
    Deliver(loop, std::move(slot.item));
    slot.item = Item();
    Pump(loop);
  }

  static constexpr size_t kDoneRunItems = 128;  // A frame's worth.
  static constexpr size_t kSpareRuns = 16;

  const OpPlan plan_;
  OpCounters& counters_;
  std::vector<std::unique_ptr<Loop>> loops_;
  Forward forward_;
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
