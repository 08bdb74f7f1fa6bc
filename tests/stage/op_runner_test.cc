// The op runtime (stage/op_runner.h) with ops of every shape, defined here
// through the public API exactly as a user would.
#include "stage/op_runner.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gtest/gtest.h>

#include "stage/cost_meter.h"
#include "stage/op_registry.h"
#include "stage/stage.h"

namespace sluice {
namespace {

namespace po = boost::program_options;

Item DataItem(uint64_t seq, std::string payload) {
  Item item;
  item.stream = "s";
  item.seq = seq;
  item.payload = std::move(payload);
  return item;
}

// Runs `items` through one op with `plan` and returns what comes out,
// sorted by seq (end-of-stream markers last).
std::vector<Item> RunThrough(OpPlan plan, std::vector<Item> items,
                             OpCounters& counters) {
  static const po::variables_map no_flags;
  auto runner = OpRunner::Create(plan, no_flags, counters);
  EXPECT_TRUE(runner.ok()) << runner.status().message();
  if (!runner.ok()) return {};
  std::mutex mu;
  std::vector<Item> result;
  EXPECT_TRUE((*runner)->Start([&](ItemRun run) {
                std::lock_guard<std::mutex> lock(mu);
                for (Item& item : run) result.push_back(std::move(item));
              }).ok());
  // Runs of up to 5 items, as frames would bring them.
  ItemRun run;
  for (Item& item : items) {
    run.Append(std::move(item));
    if (run.size() == 5) (*runner)->Submit(std::exchange(run, ItemRun()));
  }
  if (!run.empty()) (*runner)->Submit(std::move(run));
  (*runner)->Close();
  (*runner)->Join();
  std::stable_sort(result.begin(), result.end(), [](const Item& a, const Item& b) {
    return std::make_pair(a.end_of_stream, a.seq) < std::make_pair(b.end_of_stream, b.seq);
  });
  return result;
}

OpPlan PlanFor(const OpDefinition& definition, int threads = 1) {
  OpPlan plan;
  plan.definition = &definition;
  plan.threads = threads;
  plan.retries = 2;
  plan.backoff = std::chrono::milliseconds(1);
  return plan;
}

class Upper : public ItemOp {
 public:
  Status Process(Item& item) override {
    for (char& c : item.payload) c = static_cast<char>(std::toupper(c));
    return Status::Ok();
  }
};

TEST(OpRunner, ItemOpRewritesEveryPayloadOnEveryThreadAndPassesEndOfStream) {
  OpDefinition upper{.name = "upper", .make_item = Make<Upper>};
  std::vector<Item> items;
  for (uint64_t i = 0; i < 500; ++i) items.push_back(DataItem(i, "item" + std::to_string(i)));
  items.push_back(Item::EndOfStream("s", 500));
  OpCounters counters;
  auto out = RunThrough(PlanFor(upper, 4), std::move(items), counters);
  ASSERT_EQ(out.size(), 501u);
  for (uint64_t i = 0; i < 500; ++i) EXPECT_EQ(out[i].payload, "ITEM" + std::to_string(i));
  EXPECT_TRUE(out[500].end_of_stream);
  EXPECT_EQ(counters.processed.value(), 500u);
  EXPECT_EQ(counters.failed.value(), 0u);
}

// Fails the first `failures` attempts of every item with `status`.
class Flaky : public ItemOp {
 public:
  Flaky(int failures, Status status) : failures_(failures), status_(std::move(status)) {}
  Status Process(Item& item) override {
    if (attempts_[item.seq]++ < failures_) return status_;
    item.payload += "!";
    return Status::Ok();
  }

 private:
  int failures_;
  Status status_;
  std::map<uint64_t, int> attempts_;
};

TEST(OpRunner, TransientFailuresAreRetriedUntilTheItemSucceeds) {
  OpDefinition flaky{.name = "flaky", .make_item = [](const OpContext&) {
                       return StatusOr<std::unique_ptr<ItemOp>>(
                           std::make_unique<Flaky>(2, Transient("busy: try later")));
                     }};
  OpCounters counters;
  auto out = RunThrough(PlanFor(flaky), {DataItem(0, "a"), DataItem(1, "b")}, counters);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[0].failed());
  EXPECT_EQ(out[0].payload, "a!");
  EXPECT_EQ(counters.retries.value(), 4u);
  EXPECT_EQ(counters.failed.value(), 0u);
}

TEST(OpRunner, AnItemOutOfRetriesIsMarkedFailedWithItsInputPayload) {
  OpDefinition flaky{.name = "flaky", .make_item = [](const OpContext&) {
                       return StatusOr<std::unique_ptr<ItemOp>>(
                           std::make_unique<Flaky>(100, Transient("quota: over the limit")));
                     }};
  OpCounters counters;
  auto out = RunThrough(PlanFor(flaky), {DataItem(7, "input")}, counters);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].failed());
  EXPECT_EQ(out[0].payload, "input");
  EXPECT_EQ(out[0].failure->op, "flaky");
  EXPECT_EQ(out[0].failure->reason, "quota");
  EXPECT_EQ(out[0].failure->detail, "quota: over the limit");
  EXPECT_EQ(out[0].failure->attempts, 3u);  // 1 + --retries 2.
  EXPECT_NE(out[0].failure->worker.find("/flaky#0"), std::string::npos);
  EXPECT_EQ(counters.failed.value(), 1u);
}

TEST(OpRunner, PermanentFailuresAreNotRetried) {
  OpDefinition flaky{.name = "flaky", .make_item = [](const OpContext&) {
                       return StatusOr<std::unique_ptr<ItemOp>>(
                           std::make_unique<Flaky>(100, Permanent("bad input")));
                     }};
  OpCounters counters;
  auto out = RunThrough(PlanFor(flaky), {DataItem(0, "x")}, counters);
  ASSERT_TRUE(out[0].failed());
  EXPECT_EQ(out[0].failure->attempts, 1u);
  EXPECT_EQ(out[0].failure->reason, "error");  // No lower_snake code given.
  EXPECT_EQ(counters.retries.value(), 0u);
}

class Throws : public ItemOp {
 public:
  Status Process(Item&) override { throw std::runtime_error("boom"); }
};

TEST(OpRunner, AnExceptionFailsTheAttemptAndIsRetriedThenDeadLettered) {
  OpDefinition throws{.name = "throws", .make_item = Make<Throws>};
  OpCounters counters;
  auto out = RunThrough(PlanFor(throws), {DataItem(0, "x")}, counters);
  ASSERT_TRUE(out[0].failed());
  EXPECT_EQ(out[0].failure->reason, "exception");
  EXPECT_EQ(out[0].failure->detail, "exception: boom");
  EXPECT_EQ(counters.retries.value(), 2u);
}

TEST(OpRunner, ItemsThatFailedEarlierBypassTheNextOp) {
  OpDefinition upper{.name = "upper", .make_item = Make<Upper>};
  Item failed = DataItem(0, "keep me");
  failed.failure = std::make_shared<ItemFailure>(ItemFailure{.op = "earlier", .reason = "x"});
  OpCounters counters;
  auto out = RunThrough(PlanFor(upper), {std::move(failed)}, counters);
  EXPECT_EQ(out[0].payload, "keep me");
  EXPECT_EQ(out[0].failure->op, "earlier");
  EXPECT_EQ(counters.processed.value(), 0u);
}

// Drops odd payloads, fans even ones out into two.
class Split : public ItemOp {
 public:
  Status Process(Item& item) override {
    if (std::stoi(item.payload) % 2) {
      item.Drop();
    } else {
      item.AddOutput(item.payload + "b");
      item.payload += "a";
    }
    return Status::Ok();
  }
};

TEST(OpRunner, AnOpCanDropAnItemOrEmitSeveralAndTheNextOpSeesEachOutput) {
  OpDefinition split{.name = "split", .make_item = Make<Split>};
  OpDefinition upper{.name = "upper", .make_item = Make<Upper>};
  OpCounters first, second;
  auto mid = RunThrough(PlanFor(split), {DataItem(0, "0"), DataItem(1, "1")}, first);
  auto out = RunThrough(PlanFor(upper), std::move(mid), second);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].payload, "0A");
  EXPECT_EQ(out[0].more_payloads, std::vector<std::string>{"0B"});
  EXPECT_TRUE(out[1].dropped);
  EXPECT_EQ(out[1].output_count(), 0u);
  EXPECT_EQ(first.dropped.value(), 1u);
}

// Records the size of every call; fails payload "bad" for good.
class Batched : public BatchOp {
 public:
  explicit Batched(std::vector<size_t>* calls) : calls_(calls) {}
  void ProcessBatch(std::span<Item> items, std::span<Status> statuses) override {
    calls_->push_back(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].payload == "bad") {
        statuses[i] = Permanent("bad_item: no");
      } else {
        items[i].payload = "<" + items[i].payload + ">";
      }
    }
  }

 private:
  std::vector<size_t>* calls_;
};

TEST(OpRunner, BatchOpGetsRunsOfItemsAndAStatusPerItem) {
  std::vector<size_t> calls;
  OpDefinition batched{
      .name = "batched",
      .make_batch = [&calls](const OpContext&) {
        return StatusOr<std::unique_ptr<BatchOp>>(std::make_unique<Batched>(&calls));
      },
      .max_run = 8};
  std::vector<Item> items;
  for (uint64_t i = 0; i < 100; ++i) items.push_back(DataItem(i, i == 50 ? "bad" : "x"));
  OpCounters counters;
  auto out = RunThrough(PlanFor(batched), std::move(items), counters);
  ASSERT_EQ(out.size(), 100u);
  EXPECT_EQ(out[0].payload, "<x>");
  ASSERT_TRUE(out[50].failed());
  EXPECT_EQ(out[50].failure->reason, "bad_item");
  EXPECT_EQ(out[50].payload, "bad");
  for (size_t n : calls) EXPECT_LE(n, 8u);
  EXPECT_LT(calls.size(), 100u);  // Runs, not one call per item.
}

// Completes each item after `delay` on the loop's timer, counting how many
// are in flight at once. Never completes payload "hang".
class Timed : public AsyncOp {
 public:
  Timed(const OpContext& context, std::atomic<int>* peak)
      : io_(*context.io), peak_(peak) {}
  void Start(Item& item, Completion done) override {
    if (item.payload == "hang") return;
    ++in_flight_;
    *peak_ = std::max(peak_->load(), in_flight_);
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::milliseconds(20));
    timer->async_wait([this, timer, &item, done](const boost::system::error_code&) {
      --in_flight_;
      item.payload = "done_" + item.payload;
      done(Status::Ok());
    });
  }

 private:
  boost::asio::io_context& io_;
  std::atomic<int>* peak_;
  int in_flight_ = 0;
};

TEST(OpRunner, AsyncOpHasUpToConcurrencyItemsInFlightOnOneLoopThread) {
  std::atomic<int> peak{0};
  OpDefinition timed{.name = "timed", .make_async = [&peak](const OpContext& c) {
                       return StatusOr<std::unique_ptr<AsyncOp>>(std::make_unique<Timed>(c, &peak));
                     }};
  OpPlan plan = PlanFor(timed);
  plan.concurrency = 50;
  std::vector<Item> items;
  for (uint64_t i = 0; i < 1000; ++i) items.push_back(DataItem(i, std::to_string(i)));
  items.push_back(Item::EndOfStream("s", 1000));
  OpCounters counters;
  auto start = std::chrono::steady_clock::now();
  auto out = RunThrough(plan, std::move(items), counters);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(out.size(), 1001u);
  for (uint64_t i = 0; i < 1000; ++i) EXPECT_EQ(out[i].payload, "done_" + std::to_string(i));
  EXPECT_LE(peak.load(), 50);
  EXPECT_GT(peak.load(), 10);  // Really concurrent, not one at a time.
  // One at a time would take 20 s; with 50 slots about 0.4 s.
  EXPECT_LT(elapsed, std::chrono::seconds(10));
  EXPECT_EQ(counters.processed.value(), 1000u);
  // Each item carries the time it spent in the op (a 20 ms timer).
  for (uint64_t i = 0; i < 1000; i += 100) EXPECT_GE(out[i].op_us, 15000u) << i;
}

// Finished items leave the loop together, a run per round of the loop, not
// one by one: each run passed on wakes the stage's I/O thread and becomes a
// frame, so one-item runs would cost a wake-up and a frame per item.
TEST(OpRunner, AsyncOpPassesItemsFinishedTogetherOnAsOneRun) {
  std::atomic<int> peak{0};
  OpDefinition timed{.name = "timed", .make_async = [&peak](const OpContext& c) {
                       return StatusOr<std::unique_ptr<AsyncOp>>(std::make_unique<Timed>(c, &peak));
                     }};
  OpPlan plan = PlanFor(timed);
  plan.concurrency = 1000;
  static const po::variables_map no_flags;
  OpCounters counters;
  auto runner = OpRunner::Create(plan, no_flags, counters);
  ASSERT_TRUE(runner.ok()) << runner.status().message();
  std::mutex mu;
  size_t runs = 0, items = 0;
  ASSERT_TRUE((*runner)->Start([&](ItemRun run) {
                std::lock_guard<std::mutex> lock(mu);
                ++runs;
                items += run.size();
              }).ok());
  // One run of 1000 items: all start in one round, their 20 ms timers
  // expire together.
  ItemRun run;
  for (uint64_t i = 0; i < 1000; ++i) run.Append(DataItem(i, std::to_string(i)));
  (*runner)->Submit(std::move(run));
  (*runner)->Close();
  (*runner)->Join();
  EXPECT_EQ(items, 1000u);
  EXPECT_EQ(peak.load(), 1000);
  // At most a frame's worth (128) per run: 8 at best; one per item before.
  EXPECT_GE(runs, 8u);
  EXPECT_LE(runs, 100u);
}

// At low load runs hold one item and a cold op measures microseconds per
// item: not cheap per item, but far cheaper than the two thread wake-ups of
// a hand-off, so a short run runs where it is; a long one goes to threads.
// The meter is fed chosen durations: its decisions, not the machine's
// clock, are what is checked.
TEST(CostMeter, AFewMicrosecondOpIsNotCheapButAShortRunOfItBeatsAHandOff) {
  using std::chrono::microseconds;
  CostMeter meter(std::chrono::milliseconds(0));
  EXPECT_FALSE(meter.CheaperThanHandOff(1));  // Not measured yet.
  meter.Add(microseconds(400), 200);          // 2 us per item.
  EXPECT_FALSE(meter.cheap());                // At least 2 us per item.
  EXPECT_FALSE(meter.CheaperThanHandOff(128));  // 256 us: hand it off.
  EXPECT_TRUE(meter.CheaperThanHandOff(1));     // 2 us here, not 2 wake-ups.
  // A preempted call (50 us per item) is clamped, not believed.
  meter.Add(microseconds(50 * 200), 200);
  EXPECT_TRUE(meter.CheaperThanHandOff(1));
  // A call that blocks (1 ms per item) is believed at once.
  meter.Add(std::chrono::milliseconds(1), 1);
  EXPECT_FALSE(meter.CheaperThanHandOff(1));
}

TEST(CostMeter, AnOpUnderAMicrosecondPerItemIsCheapAndStopsBeingSoWhenSlow) {
  using std::chrono::microseconds;
  CostMeter meter(std::chrono::milliseconds(0));
  EXPECT_FALSE(meter.cheap());
  meter.Add(microseconds(20), 200);  // 100 ns per item.
  EXPECT_TRUE(meter.cheap());
  meter.Add(std::chrono::milliseconds(200), 200);  // 1 ms per item: blocks.
  EXPECT_FALSE(meter.cheap());
  // An op with a --latency-ms starts out dear.
  EXPECT_FALSE(CostMeter(std::chrono::milliseconds(10)).CheaperThanHandOff(1));
}

TEST(OpRunner, AnUnmeasuredOpRunsOnItsThreads) {
  OpDefinition upper{.name = "upper", .make_item = Make<Upper>};
  static const po::variables_map no_flags;
  OpCounters counters;
  auto runner = OpRunner::Create(PlanFor(upper, 2), no_flags, counters);
  ASSERT_TRUE(runner.ok()) << runner.status().message();
  EXPECT_FALSE((*runner)->InlineFor(1));
  EXPECT_FALSE((*runner)->cheap());
}

// Fails the first attempt of the items whose payload is "fail once", on
// whichever instance tries them (retries may run on another thread).
class FailsOnce : public ItemOp {
 public:
  explicit FailsOnce(std::set<uint64_t>* tried, std::mutex* mu) : tried_(tried), mu_(mu) {}
  Status Process(Item& item) override {
    if (item.payload == "fail once") {
      std::lock_guard<std::mutex> lock(*mu_);
      if (tried_->insert(item.seq).second) return Transient("busy: later");
    }
    item.payload += "!";
    return Status::Ok();
  }

 private:
  std::set<uint64_t>* tried_;
  std::mutex* mu_;
};

// What a runner passed on, in the order it did.
struct Forwarded {
  std::mutex mu;
  std::condition_variable changed;
  std::vector<std::vector<uint64_t>> runs;  // Seqs of each run.
  size_t items = 0;
  OpRunner::Forward Callback() {
    return [this](ItemRun run) {
      std::lock_guard<std::mutex> lock(mu);
      std::vector<uint64_t>& seqs = runs.emplace_back();
      for (const Item& item : run) seqs.push_back(item.seq);
      items += run.size();
      changed.notify_all();
    };
  }
  // Waits until `n` items have come (a generous bound against a hang).
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return changed.wait_for(lock, std::chrono::seconds(60), [&] { return items >= n; });
  }
};

// FailsOnce on one thread with `backoff`, started; what it passes on goes
// to `forwarded`.
struct FailsOnceRunner {
  explicit FailsOnceRunner(std::chrono::milliseconds backoff) {
    OpPlan plan = PlanFor(definition, 1);
    plan.backoff = backoff;
    static const po::variables_map no_flags;
    auto made = OpRunner::Create(plan, no_flags, counters);
    EXPECT_TRUE(made.ok()) << made.status().message();
    if (!made.ok()) return;
    runner = std::move(*made);
    EXPECT_TRUE(runner->Start(forwarded.Callback()).ok());
  }
  std::set<uint64_t> tried;
  std::mutex tried_mu;
  OpDefinition definition{.name = "fails_once", .make_item = [this](const OpContext&) {
                            return StatusOr<std::unique_ptr<ItemOp>>(
                                std::make_unique<FailsOnce>(&tried, &tried_mu));
                          }};
  OpCounters counters;
  Forwarded forwarded;
  std::unique_ptr<OpRunner> runner;  // Last: stopped before what it uses goes.
};

// Issue 21, part 2: a retry's backoff once slept on the thread that tried
// the item, holding up the rest of its run and every run behind it (with a
// cheap op, the whole stage). Now the item waits off that path: its run goes
// on without it, later runs are not held, and it follows alone after its
// backoff. One thread, so that a sleeping thread would hold everything.
TEST(OpRunner, AnItemInRetryBackoffHoldsUpNeitherItsRunNorLaterRuns) {
  // Long enough that everything else is through long before it is due.
  FailsOnceRunner f(std::chrono::milliseconds(2000));
  ASSERT_TRUE(f.runner);
  for (uint64_t first : {0, 5, 10}) {
    ItemRun run;
    for (uint64_t i = first; i < first + 5; ++i) {
      run.Append(DataItem(i, i == 2 ? "fail once" : "x"));
    }
    f.runner->Submit(std::move(run));
  }
  // Everything but seq 2 comes through while seq 2 waits for its retry.
  ASSERT_TRUE(f.forwarded.WaitFor(14));
  auto order = [&] {
    std::lock_guard<std::mutex> lock(f.forwarded.mu);
    std::vector<uint64_t> seqs;
    for (const auto& run : f.forwarded.runs) seqs.insert(seqs.end(), run.begin(), run.end());
    return seqs;
  };
  EXPECT_EQ(order(), (std::vector<uint64_t>{0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}));
  EXPECT_EQ(f.counters.retries.value(), 1u);
  // Close() still finishes the retry: seq 2 follows, alone, succeeded.
  f.runner->Close();
  f.runner->Join();
  EXPECT_EQ(order().back(), 2u);
  EXPECT_EQ(f.forwarded.runs.back(), std::vector<uint64_t>{2});
  EXPECT_EQ(f.counters.processed.value(), 15u);
  EXPECT_EQ(f.counters.failed.value(), 0u);
}

// Items retried one by one used to travel on as runs (then frames) of one
// item each: at 1% of a million items per second, as many frames again.
// Groups due within the same millisecond are now tried together: 200
// single-item runs that each fail once come back in far fewer runs.
TEST(OpRunner, RetriesDueTogetherAreTriedTogetherAndLeaveAsOneRun) {
  FailsOnceRunner f(std::chrono::milliseconds(20));  // Due within 10-20 ms.
  ASSERT_TRUE(f.runner);
  constexpr uint64_t kItems = 200;
  for (uint64_t i = 0; i < kItems; ++i) {
    ItemRun run;
    run.Append(DataItem(i, "fail once"));
    f.runner->Submit(std::move(run));
  }
  ASSERT_TRUE(f.forwarded.WaitFor(kItems));
  f.runner->Close();
  f.runner->Join();
  EXPECT_EQ(f.counters.retries.value(), kItems);
  EXPECT_EQ(f.counters.processed.value(), kItems);
  // The backoffs spread over some 10 ms: a run per millisecond, about.
  EXPECT_LT(f.forwarded.runs.size(), kItems / 4) << "retried items left one by one";
}

// The same for a cheap op run where its items are (the stage's I/O
// thread): RunInline() returns at once without the item that needs a
// retry, which the op's threads pass on after its backoff.
TEST(OpRunner, RunInlineReturnsTheRunWithoutAnItemWaitingForItsRetry) {
  FailsOnceRunner f(std::chrono::milliseconds(2000));
  ASSERT_TRUE(f.runner);
  ItemRun run;
  for (uint64_t i = 0; i < 5; ++i) run.Append(DataItem(i, i == 3 ? "fail once" : "x"));
  ASSERT_TRUE(f.runner->RunInline(run));
  ASSERT_EQ(run.size(), 4u);
  for (size_t i = 0; i < run.size(); ++i) {
    EXPECT_EQ(run[i].seq, std::vector<uint64_t>({0, 1, 2, 4})[i]);
    EXPECT_EQ(run[i].payload, "x!");
  }
  {
    std::lock_guard<std::mutex> lock(f.forwarded.mu);
    EXPECT_EQ(f.forwarded.items, 0u);  // Still waiting for its backoff.
  }
  ItemRun later;
  later.Append(DataItem(5, "x"));
  ASSERT_TRUE(f.runner->RunInline(later));
  EXPECT_EQ(later.size(), 1u);
  f.runner->Close();
  f.runner->Join();
  ASSERT_EQ(f.forwarded.runs.size(), 1u);
  EXPECT_EQ(f.forwarded.runs[0], std::vector<uint64_t>{3});
  EXPECT_EQ(f.counters.processed.value(), 6u);
  EXPECT_EQ(f.counters.retries.value(), 1u);
}

// Fails part "b" of a fanned-out item once; counts calls per payload.
class FailsPartBOnce : public ItemOp {
 public:
  explicit FailsPartBOnce(std::map<std::string, int>* calls) : calls_(calls) {}
  Status Process(Item& item) override {
    if (item.payload == "b" && (*calls_)["b"]++ == 0) return Transient("busy: later");
    if (item.payload != "b") ++(*calls_)[item.payload];
    item.payload += "!";
    return Status::Ok();
  }

 private:
  std::map<std::string, int>* calls_;
};

// A part that failed waits for its retry with the parts already done,
// which are not run again; the item comes out joined, in order.
TEST(OpRunner, AFannedOutItemRetriesOnlyThePartThatFailed) {
  std::map<std::string, int> calls;
  OpDefinition fails_b{.name = "fails_b", .make_item = [&](const OpContext&) {
                         return StatusOr<std::unique_ptr<ItemOp>>(
                             std::make_unique<FailsPartBOnce>(&calls));
                       }};
  Item fanned = DataItem(0, "a");
  fanned.AddOutput("b");
  fanned.AddOutput("c");
  OpCounters counters;
  auto out = RunThrough(PlanFor(fails_b), {std::move(fanned), DataItem(1, "d")}, counters);
  ASSERT_EQ(out.size(), 2u);
  ASSERT_FALSE(out[0].failed());
  EXPECT_EQ(out[0].payload, "a!");
  EXPECT_EQ(out[0].more_payloads, (std::vector<std::string>{"b!", "c!"}));
  EXPECT_EQ(calls["a"], 1);
  EXPECT_EQ(calls["b"], 2);
  EXPECT_EQ(calls["c"], 1);
  EXPECT_EQ(out[1].payload, "d!");
  EXPECT_EQ(counters.retries.value(), 1u);
  EXPECT_EQ(counters.processed.value(), 2u);
}

// A BatchOp's retry is one call with the items that failed.
TEST(OpRunner, BatchOpRetriesTheItemsThatFailedInOneCall) {
  class FailsOddOnce : public BatchOp {
   public:
    explicit FailsOddOnce(std::vector<size_t>* calls) : calls_(calls) {}
    void ProcessBatch(std::span<Item> items, std::span<Status> statuses) override {
      calls_->push_back(items.size());
      for (size_t i = 0; i < items.size(); ++i) {
        if (items[i].seq % 2 == 1 && tried_.insert(items[i].seq).second) {
          statuses[i] = Transient("busy: later");
        } else {
          items[i].payload += "!";
        }
      }
    }

   private:
    std::vector<size_t>* calls_;
    std::set<uint64_t> tried_;
  };
  std::vector<size_t> calls;
  OpDefinition batch{.name = "batch",
                     .make_batch = [&](const OpContext&) {
                       return StatusOr<std::unique_ptr<BatchOp>>(
                           std::make_unique<FailsOddOnce>(&calls));
                     },
                     .max_run = 8};
  std::vector<Item> items;
  for (uint64_t i = 0; i < 5; ++i) items.push_back(DataItem(i, "x"));
  OpCounters counters;
  auto out = RunThrough(PlanFor(batch), std::move(items), counters);
  ASSERT_EQ(out.size(), 5u);
  for (const Item& item : out) EXPECT_EQ(item.payload, "x!") << item.seq;
  EXPECT_EQ(calls, (std::vector<size_t>{5, 2}));
  EXPECT_EQ(counters.retries.value(), 2u);
}

// Records which thread uses each instance, and the instance's number.
class ThreadCheck : public ItemOp {
 public:
  ThreadCheck(const OpContext& context, std::atomic<int>* shared, std::mutex* mu,
              std::set<int>* numbers)
      : shared_(shared) {
    std::lock_guard<std::mutex> lock(*mu);
    numbers->insert(context.thread);
  }
  Status Process(Item&) override {
    if (owner_ == std::thread::id()) owner_ = std::this_thread::get_id();
    if (owner_ != std::this_thread::get_id()) ++*shared_;
    return Status::Ok();
  }

 private:
  std::atomic<int>* shared_;
  std::thread::id owner_;
};

// op.h: "the stage makes one instance per worker thread ... so an op's
// members are per-thread state and need no locks". RunInline() is called
// by the stage's I/O thread and by the threads of earlier ops in the
// chain: each gets an instance of its own, numbered after the workers'.
TEST(OpRunner, EachThreadThatRunsAnOpInlineHasItsOwnInstance) {
  std::atomic<int> shared{0};
  std::mutex mu;
  std::set<int> numbers;
  OpDefinition check{.name = "check", .make_item = [&](const OpContext& c) {
                       return StatusOr<std::unique_ptr<ItemOp>>(
                           std::make_unique<ThreadCheck>(c, &shared, &mu, &numbers));
                     }};
  static const po::variables_map no_flags;
  OpCounters counters;
  auto runner = OpRunner::Create(PlanFor(check, 2), no_flags, counters);
  ASSERT_TRUE(runner.ok()) << runner.status().message();
  ASSERT_TRUE((*runner)->Start([](ItemRun) {}).ok());
  auto caller = [&] {
    for (uint64_t i = 0; i < 200; ++i) {
      ItemRun run;
      run.Append(DataItem(i, "x"));
      EXPECT_TRUE((*runner)->RunInline(run));
    }
  };
  std::thread a(caller), b(caller), c(caller);
  a.join();
  b.join();
  c.join();
  (*runner)->Close();
  (*runner)->Join();
  EXPECT_EQ(shared.load(), 0) << "an instance was used by two threads";
  EXPECT_EQ(numbers, (std::set<int>{0, 1, 2, 3, 4}));  // 2 workers, 3 callers.
  EXPECT_EQ(counters.processed.value(), 600u);
}

// --concurrency K means K calls in flight: the stage holds enough items to
// fill every slot, whatever --queue says; a chain without async ops holds
// --queue.
TEST(OpRunner, StageHoldsEnoughItemsToFillEveryAsyncSlot) {
  OpDefinition any{.name = "any"};
  StageOptions options;
  options.flags.queue_capacity = 256;
  options.flags.send.batch_items = 128;
  OpPlan threaded = PlanFor(any, 10);
  options.ops = {threaded};
  EXPECT_EQ(HeldCapacity(options), 256u);
  OpPlan async = PlanFor(any, 2);
  async.concurrency = 1000;
  options.ops = {threaded, async};
  EXPECT_EQ(HeldCapacity(options), 2000u + 256u);
  options.flags.queue_capacity = 100'000;
  EXPECT_EQ(HeldCapacity(options), 100'000u);
}

// A slow op's items carry how long they waited for a thread and how long
// the op took (the sink sums both into its acks for the producer's flow
// control); the end-of-stream is not timed work.
TEST(OpRunner, SlowOpStampsEachItemsWaitAndOpTime) {
  class Sleepy : public ItemOp {
   public:
    Status Process(Item&) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return Status::Ok();
    }
  };
  OpDefinition sleepy{.name = "sleepy", .make_item = [](const OpContext&) {
                        return StatusOr<std::unique_ptr<ItemOp>>(std::make_unique<Sleepy>());
                      }};
  std::vector<Item> items;
  for (uint64_t i = 0; i < 10; ++i) items.push_back(DataItem(i, "x"));
  OpCounters counters;
  auto out = RunThrough(PlanFor(sleepy, 1), std::move(items), counters);
  ASSERT_EQ(out.size(), 10u);
  uint32_t longest_wait = 0;
  for (const Item& item : out) {
    EXPECT_GE(item.op_us, 2000u) << item.seq;
    longest_wait = std::max(longest_wait, item.queued_us);
  }
  // One thread: the last item waited for at least eight others.
  EXPECT_GE(longest_wait, 16000u);
}

TEST(OpRunner, AsyncAttemptsPastTheTimeoutAreRetriedThenFailedAsTimeout) {
  std::atomic<int> peak{0};
  OpDefinition timed{.name = "timed", .make_async = [&peak](const OpContext& c) {
                       return StatusOr<std::unique_ptr<AsyncOp>>(std::make_unique<Timed>(c, &peak));
                     }};
  OpPlan plan = PlanFor(timed);
  plan.concurrency = 4;
  plan.timeout = std::chrono::milliseconds(100);
  OpCounters counters;
  auto out = RunThrough(plan, {DataItem(0, "hang"), DataItem(1, "fine")}, counters);
  ASSERT_EQ(out.size(), 2u);
  ASSERT_TRUE(out[0].failed());
  EXPECT_EQ(out[0].failure->reason, "timeout");
  EXPECT_EQ(out[0].failure->attempts, 3u);
  EXPECT_EQ(out[0].payload, "hang");
  EXPECT_EQ(out[1].payload, "done_fine");
  EXPECT_EQ(counters.timeouts.value(), 3u);
}

TEST(OpRunner, FailedMakeStopsTheRunnerBeforeItStarts) {
  OpDefinition broken{.name = "broken", .make_item = [](const OpContext&) {
                        return StatusOr<std::unique_ptr<ItemOp>>(Unavailable("cannot reach it"));
                      }};
  OpCounters counters;
  po::variables_map vm;
  auto runner = OpRunner::Create(PlanFor(broken), vm, counters);
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(runner.status().code(), StatusCode::kUnavailable);
}

TEST(OpRunner, FailureReasonIsALeadingLowerSnakeCodeOrError) {
  EXPECT_EQ(FailureReason("timeout: 10 ms"), "timeout");
  EXPECT_EQ(FailureReason("not_a_token: x"), "not_a_token");
  EXPECT_EQ(FailureReason("Bad Thing: x"), "error");
  EXPECT_EQ(FailureReason("no colon"), "error");
  EXPECT_EQ(FailureReason(": empty code"), "error");
}

TEST(OpRunner, RetryBackoffDoublesWithJitterAndIsCapped) {
  for (int i = 0; i < 100; ++i) {
    auto first = RetryBackoff(std::chrono::milliseconds(100), 1);
    EXPECT_GE(first, std::chrono::milliseconds(50));
    EXPECT_LE(first, std::chrono::milliseconds(100));
    auto third = RetryBackoff(std::chrono::milliseconds(100), 3);
    EXPECT_GE(third, std::chrono::milliseconds(200));
    EXPECT_LE(third, std::chrono::milliseconds(400));
    EXPECT_LE(RetryBackoff(std::chrono::milliseconds(100), 60), std::chrono::seconds(30));
  }
}

TEST(OpRegistry, BuiltinOpsAreRegisteredAndUnknownNamesAreAbsent) {
  RegisterBuiltinOps();
  EXPECT_EQ(RegisteredOpNames(), "exec, http, pass, result, token");
  EXPECT_NE(FindOp("token"), nullptr);
  EXPECT_TRUE(FindOp("token")->make_async);
  EXPECT_EQ(FindOp("tokn"), nullptr);
}

TEST(SimulatedOps, TokenThenResultMapsIToResultIAndResultRejectsANonToken) {
  RegisterBuiltinOps();
  OpCounters a, b;
  auto mid = RunThrough(PlanFor(*FindOp("token")), {DataItem(0, "42")}, a);
  auto out = RunThrough(PlanFor(*FindOp("result")), std::move(mid), b);
  EXPECT_EQ(out[0].payload, "result_42");
  auto bad = RunThrough(PlanFor(*FindOp("result")), {DataItem(0, "7")}, b);
  ASSERT_TRUE(bad[0].failed());
  EXPECT_EQ(bad[0].failure->reason, "not_a_token");
  EXPECT_EQ(bad[0].payload, "7");
}

}  // namespace
}  // namespace sluice
