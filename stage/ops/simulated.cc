// The ops of the token-then-result job, written on the public op API like any
// user's op. Each stands for a remote call of up to --latency-ms:
//
//   token   payload i       -> "token_i"     (default 10 threads, 10 ms)
//   result  "token_i"       -> "result_i"    (default 5 threads, 5 ms); an
//                              input that is not a token fails the item
//                              ("not_a_token"), it is not made up
//   pass    payload         -> payload       (1 thread, 0 ms): the hub;
//                              with --pass-fail-percent N, the items whose
//                              seq % 100 < N fail Transient on their first
//                              attempt in the process (to try retries)
//
// The asynchronous form counts its simulated calls (calls_<i>_<op>); with
// --batch N it gathers items into calls of up to N, one latency each.
//
// The latency is uniform in [0, --latency-ms). The per-item form sleeps on
// its worker thread; with --concurrency K the asynchronous form waits on a
// timer of the stage's event loop instead, K items at a time per loop.
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <unordered_set>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "sluice/gather.h"
#include "stage/op_registry.h"

namespace sluice {
namespace {

constexpr std::string_view kTokenPrefix = "token_";
constexpr std::string_view kResultPrefix = "result_";

enum class Kind { kToken, kResult, kPass };

// The transformation itself, in place.
Status Apply(Kind kind, Item& item) {
  switch (kind) {
    case Kind::kToken:
      item.payload.insert(0, kTokenPrefix);
      return Status::Ok();
    case Kind::kResult:
      if (!std::string_view(item.payload).starts_with(kTokenPrefix)) {
        return Permanent("not_a_token: result expects \"token_...\", got " +
                         std::to_string(item.payload.size()) + " bytes not starting with it");
      }
      item.payload.replace(0, kTokenPrefix.size(), kResultPrefix);
      return Status::Ok();
    case Kind::kPass:
      return Status::Ok();
  }
  return Status::Ok();
}

// --pass-fail-percent: fails an item's first attempt in this process when
// its seq % 100 is below the percentage, so that every such item is
// retried exactly once, whichever instance tries it again.
class FirstAttemptFailures {
 public:
  explicit FirstAttemptFailures(const OpContext& context) {
    if (context.flags != nullptr && context.flags->count("pass-fail-percent")) {
      percent_ = (*context.flags)["pass-fail-percent"].as<int64_t>();
    }
  }
  // True if this attempt on `item` is to fail.
  bool Fail(const Item& item) const {
    if (percent_ <= 0 || static_cast<int64_t>(item.seq % 100) >= percent_) return false;
    static std::mutex mu;
    static std::unordered_set<std::string> tried;  // Guarded by mu.
    std::string key = item.stream;
    key.append(1, '\0').append(std::to_string(item.seq));
    std::lock_guard<std::mutex> lock(mu);
    return tried.insert(std::move(key)).second;
  }
  static Status Failure() {
    return Transient("flaky: --pass-fail-percent fails this item's first attempt");
  }

 private:
  int64_t percent_ = 0;
};

class Latency {
 public:
  explicit Latency(const OpContext& context)
      : random_(std::random_device{}() + context.thread),
        max_us_(std::chrono::duration_cast<std::chrono::microseconds>(
                    context.max_latency).count()),
        pick_(0, std::max<int64_t>(0, max_us_ - 1)) {}
  bool none() const { return max_us_ <= 0; }
  std::chrono::microseconds Next() {
    return std::chrono::microseconds(none() ? 0 : pick_(random_));
  }

 private:
  std::mt19937_64 random_;
  int64_t max_us_;
  std::uniform_int_distribution<int64_t> pick_;
};

template <Kind kKind>
class Simulated : public ItemOp {
 public:
  explicit Simulated(const OpContext& context) : latency_(context), failures_(context) {}
  Status Process(Item& item) override {
    // The simulated remote call: the one deliberate sleep of a stage.
    if (!latency_.none()) std::this_thread::sleep_for(latency_.Next());
    if (failures_.Fail(item)) return FirstAttemptFailures::Failure();
    return Apply(kKind, item);
  }

 private:
  Latency latency_;
  FirstAttemptFailures failures_;
};

// The same op waiting on a timer of the event loop: thousands of items in
// flight on one thread, no allocation per item (timers are reused). With
// --batch N, items are gathered into calls of up to N, and a call costs
// one latency, as a batch endpoint of a remote API does.
template <Kind kKind>
class SimulatedAsync : public AsyncOp {
 public:
  explicit SimulatedAsync(const OpContext& context)
      : io_(*context.io), latency_(context), failures_(context),
        calls_(context.metrics->Counter("calls")) {
    if (context.batch > 1) {
      gather_.emplace(context, [this](std::vector<Gather::Entry> call) {
        Waiting* w = Take();
        w->call = std::move(call);
        Wait(w);
      });
    }
  }

  void Start(Item& item, Completion done) override {
    if (failures_.Fail(item)) {
      done(FirstAttemptFailures::Failure());
      return;
    }
    if (gather_) {
      gather_->Add(item, done);
      return;
    }
    if (latency_.none()) {
      done(Apply(kKind, item));
      return;
    }
    Waiting* w = Take();
    w->call.push_back({&item, done});  // No allocation: capacity is kept.
    Wait(w);
  }

  void Cancel(Item& item) override {
    if (gather_ && gather_->Remove(item)) return;
    for (auto& w : all_) {
      for (Gather::Entry& e : w->call) {
        if (e.item == &item) e.item = nullptr;  // Not ours any more.
      }
    }
  }

 private:
  struct Waiting {
    explicit Waiting(boost::asio::io_context& io) : timer(io) {}
    boost::asio::steady_timer timer;
    std::vector<Gather::Entry> call;  // One entry, or a batch.
  };

  // One simulated call for the items of `w->call`.
  void Wait(Waiting* w) {
    calls_.Add();
    w->timer.expires_after(latency_.Next());
    w->timer.async_wait([this, w](const boost::system::error_code&) {
      for (Gather::Entry& e : w->call) {
        if (e.item != nullptr) e.done(Apply(kKind, *e.item));
      }
      w->call.clear();
      idle_.push_back(w);
    });
  }

  Waiting* Take() {
    if (idle_.empty()) {
      all_.push_back(std::make_unique<Waiting>(io_));
      return all_.back().get();
    }
    Waiting* w = idle_.back();
    idle_.pop_back();
    return w;
  }

  boost::asio::io_context& io_;
  Latency latency_;
  FirstAttemptFailures failures_;
  std::optional<Gather> gather_;  // With --batch.
  OpCounter& calls_;  // Simulated calls: one per item, or per batch.
  std::vector<std::unique_ptr<Waiting>> all_;  // At most --concurrency.
  std::vector<Waiting*> idle_;
};

template <Kind kKind>
OpDefinition Define(std::string name, std::string summary, int threads,
                    int latency_ms) {
  return OpDefinition{
      .name = std::move(name),
      .summary = std::move(summary),
      .make_item = Make<Simulated<kKind>>,
      .make_async = Make<SimulatedAsync<kKind>>,
      .default_threads = threads,
      .default_latency = std::chrono::milliseconds(latency_ms),
      .batches = true,
      // Without latency the op costs less than a queue hand-off.
      .max_run = 64,
  };
}

}  // namespace

void RegisterSimulatedOps() {
  static RegisterOp token(Define<Kind::kToken>(
      "token", "payload i -> token_i, a simulated API call of up to --latency-ms (10)",
      10, 10));
  static RegisterOp result(Define<Kind::kResult>(
      "result",
      "token_i -> result_i, a simulated API call of up to --latency-ms (5); "
      "anything else fails as not_a_token",
      5, 5));
  OpDefinition pass_definition = Define<Kind::kPass>(
      "pass", "forwards items unchanged (the hub between two scaled stages)", 1, 0);
  pass_definition.flags = [](boost::program_options::options_description& flags) {
    flags.add_options()(
        "pass-fail-percent", boost::program_options::value<int64_t>()->default_value(0),
        "fail the items whose seq % 100 is below this Transient on their first "
        "attempt, to try retries (0..100)");
  };
  pass_definition.check = [](const boost::program_options::variables_map& vm) {
    const int64_t percent = vm.count("pass-fail-percent")
                                ? vm["pass-fail-percent"].as<int64_t>()
                                : 0;
    if (percent < 0 || percent > 100) {
      return InvalidArgument("--pass-fail-percent must be 0..100, got " +
                             std::to_string(percent));
    }
    return Status::Ok();
  };
  static RegisterOp pass(std::move(pass_definition));
}

}  // namespace sluice
