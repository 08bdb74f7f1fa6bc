#include "sink/sink.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/bounded_queue.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/socket.h"
#include "sink/output_writer.h"
#include "sink/stream_tracker.h"

namespace sluice {
namespace {

constexpr size_t kAccountRun = 256;
constexpr size_t kMissingListed = 20;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Trackers of every stream seen, shared by the accounting thread (writes) and
// the progress/report code (reads), under one mutex.
class Accounting {
 public:
  Accounting(const SinkOptions& options, SinkCounters& counters,
             std::unique_ptr<OutputWriter> writer)
      : options_(options), counters_(counters), writer_(std::move(writer)) {}

  // Accounts a run of items; returns the streams that completed with it.
  StatusOr<std::vector<std::string>> Take(std::vector<Item>& items,
                                          AckPublisher& acks) {
    std::vector<std::string> completed;
    auto now = std::chrono::steady_clock::now();
    int64_t now_us = WallMicros();
    std::lock_guard<std::mutex> lock(mu_);
    for (Item& item : items) {
      StreamTracker* tracker = Find(item.stream);
      if (tracker == nullptr) {
        counters_.too_many_streams.Add();
        too_many_log_.Warn("dropped an item of stream '" + item.stream +
                           "': already tracking --max-streams streams");
        continue;
      }
      bool was_complete = tracker->complete();
      if (item.end_of_stream) {
        tracker->AcceptEndOfStream(item.count, now);
        acks.EndOfStreamTaken(item.stream, now);
      } else {
        switch (tracker->AcceptItem(item.seq, item.produced_at_us, now_us, now)) {
          case StreamTracker::Outcome::kNew: {
            counters_.items_new.Add();
            if (item.failure) {
              counters_.failed.Add();
              tracker->RecordFailed(item.failure->reason);
            } else if (item.dropped) {
              counters_.dropped.Add();
              tracker->RecordDropped();
            }
            const uint64_t seq = item.seq;
            Status s = writer_->Write(std::move(item));
            if (!s.ok()) return s;
            acks.Taken(tracker->id(), seq, now);
            break;
          }
          case StreamTracker::Outcome::kDuplicate:
            counters_.duplicates.Add();
            acks.Taken(item.stream, item.seq, now);  // Its ack was lost.
            break;
          case StreamTracker::Outcome::kOutOfRange:
            counters_.out_of_range.Add();
            out_of_range_log_.Warn("stream " + item.stream + ": seq " +
                                   std::to_string(item.seq) +
                                   " is beyond its end-of-stream count");
            break;
        }
      }
      // `item` may have been moved into the writer: use the tracker's id.
      const std::string& stream = tracker->id();
      if (tracker->complete()) acks.Completed(stream, now);
      if (!was_complete && tracker->complete()) {
        ++complete_streams_;
        Status s = writer_->FlushStream(stream);
        if (!s.ok()) return s;
        completed.push_back(stream);
      }
    }
    counters_.written.Set(writer_->written());
    return completed;
  }

  uint64_t complete_streams() const {
    std::lock_guard<std::mutex> lock(mu_);
    return complete_streams_;
  }

  // Flushes the output and publishes the acks that are due: an ack never
  // runs ahead of what was handed to the operating system.
  Status PublishAcks(AckPublisher& acks, bool all) {
    auto now = std::chrono::steady_clock::now();
    if (!all && !acks.Due(now)) return Status::Ok();
    {
      std::lock_guard<std::mutex> lock(mu_);
      Status s = writer_->FlushFile();
      if (!s.ok()) return s;
    }
    return acks.Publish(now, all);
  }

  Status Flush() {
    std::lock_guard<std::mutex> lock(mu_);
    Status s = writer_->FlushAll();
    counters_.written.Set(writer_->written());
    return s;
  }

  nlohmann::json Report() const {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = std::chrono::steady_clock::now();
    nlohmann::json streams = nlohmann::json::array();
    Totals totals;
    for (const auto& tracker : order_) {
      nlohmann::json s = Fields(*tracker, now);
      s["stream"] = tracker->id();
      s["end_of_stream_seen"] = tracker->expected().has_value();
      if (tracker->expected() && !tracker->complete()) {
        s["missing_seqs"] = tracker->MissingSeqs(kMissingListed);
      }
      streams.push_back(std::move(s));
      totals.Add(*tracker);
    }
    nlohmann::json report;
    bool enough = options_.streams == 0 || complete_streams_ >= options_.streams;
    report["complete"] = !order_.empty() && totals.all_complete && enough;
    report["expected"] = totals.expected;
    report["received"] = totals.received;
    report["unique"] = totals.unique;
    report["duplicates"] = totals.duplicates;
    report["missing"] = totals.missing;
    report["in_order"] = totals.in_order;
    double elapsed = 0;
    if (totals.first) {
      elapsed = Seconds((totals.all_complete && totals.last ? *totals.last : now) -
                        *totals.first);
    }
    report["elapsed_s"] = elapsed;
    report["items_per_s"] = elapsed > 0 ? totals.unique / elapsed : 0.0;
    report["latency_ms"] = {{"p50", totals.latency.Quantile(0.5) / 1000},
                            {"p99", totals.latency.Quantile(0.99) / 1000}};
    report["streams_complete"] = complete_streams_;
    report["out_of_range"] = totals.out_of_range;
    report["failed"] = totals.failed;
    report["failed_by_reason"] = totals.failed_by_reason;
    report["dropped"] = totals.dropped;
    report["dead_letters_written"] = writer_->dead_letters();
    report["written"] = writer_->written();
    report["output_in_order"] = writer_->output_in_order();
    report["streams"] = std::move(streams);
    nlohmann::json rejected;
    counters_.receive.rejected.AppendTo(rejected);
    rejected["too_many_streams"] = counters_.too_many_streams.value();
    report["rejected"] = std::move(rejected);
    return report;
  }

  // "  812/1000 items  4051/s  ETA 0.1 s" for a terminal.
  std::string ProgressLine(std::chrono::steady_clock::time_point started) const {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t unique = 0;
    uint64_t expected = 0;
    bool all_known = !order_.empty();
    for (const auto& t : order_) {
      unique += t->unique();
      if (t->expected()) {
        expected += *t->expected();
      } else {
        all_known = false;
      }
    }
    double elapsed = Seconds(std::chrono::steady_clock::now() - started);
    double rate = elapsed > 0 ? unique / elapsed : 0;
    char line[160];
    if (all_known && rate > 0) {
      double eta = expected > unique ? (expected - unique) / rate : 0;
      std::snprintf(line, sizeof(line), "%10llu/%llu items  %9.0f/s  ETA %.1f s",
                    static_cast<unsigned long long>(unique),
                    static_cast<unsigned long long>(expected), rate, eta);
    } else {
      std::snprintf(line, sizeof(line), "%10llu items  %9.0f/s",
                    static_cast<unsigned long long>(unique), rate);
    }
    return line;
  }

 private:
  struct Totals {
    uint64_t expected = 0, received = 0, unique = 0, duplicates = 0,
             missing = 0, out_of_range = 0, failed = 0, dropped = 0;
    std::map<std::string, uint64_t> failed_by_reason;
    bool in_order = true, all_complete = true;
    std::optional<std::chrono::steady_clock::time_point> first, last;
    LatencyHistogram latency;
    void Add(const StreamTracker& t) {
      expected += t.expected().value_or(0);
      received += t.received();
      unique += t.unique();
      duplicates += t.duplicates();
      missing += t.missing();
      out_of_range += t.out_of_range();
      failed += t.failed();
      dropped += t.dropped();
      for (const auto& [reason, n] : t.failed_by_reason()) {
        failed_by_reason[reason] += n;
      }
      in_order = in_order && t.in_order();
      all_complete = all_complete && t.complete();
      if (t.first_item_at() && (!first || *t.first_item_at() < *first)) {
        first = t.first_item_at();
      }
      if (t.completed_at() && (!last || *t.completed_at() > *last)) {
        last = t.completed_at();
      }
      latency.Merge(t.latency());
    }
  };

  static nlohmann::json Fields(const StreamTracker& t,
                               std::chrono::steady_clock::time_point now) {
    nlohmann::json s;
    s["complete"] = t.complete();
    s["expected"] = t.expected().value_or(0);
    s["received"] = t.received();
    s["unique"] = t.unique();
    s["duplicates"] = t.duplicates();
    s["missing"] = t.missing();
    s["in_order"] = t.in_order();
    double elapsed = 0;
    if (t.first_item_at()) {
      elapsed = Seconds(t.completed_at().value_or(now) - *t.first_item_at());
    }
    s["elapsed_s"] = elapsed;
    s["items_per_s"] = elapsed > 0 ? t.unique() / elapsed : 0.0;
    s["latency_ms"] = {{"p50", t.latency().Quantile(0.5) / 1000},
                       {"p99", t.latency().Quantile(0.99) / 1000}};
    s["out_of_range"] = t.out_of_range();
    s["after_end_of_stream"] = t.after_end_of_stream();
    s["failed"] = t.failed();
    s["failed_by_reason"] = t.failed_by_reason();
    s["dropped"] = t.dropped();
    return s;
  }

  StreamTracker* Find(const std::string& id) {  // REQUIRES: mu_ held.
    auto it = by_id_.find(id);
    if (it != by_id_.end()) return it->second;
    if (order_.size() >= options_.max_streams) return nullptr;
    order_.push_back(std::make_unique<StreamTracker>(id));
    by_id_.emplace(id, order_.back().get());
    spdlog::info("stream {}: first message", id);
    return order_.back().get();
  }

  const SinkOptions& options_;
  SinkCounters& counters_;
  mutable std::mutex mu_;
  std::unique_ptr<OutputWriter> writer_;                        // Guarded by mu_.
  std::vector<std::unique_ptr<StreamTracker>> order_;           // Guarded by mu_.
  std::unordered_map<std::string, StreamTracker*> by_id_;       // Guarded by mu_.
  uint64_t complete_streams_ = 0;                               // Guarded by mu_.
  RateLimitedLog too_many_log_{"sink.too_many_streams", std::chrono::seconds(1)};
  RateLimitedLog out_of_range_log_{"sink.out_of_range", std::chrono::seconds(1)};
};

Status WriteReport(const std::string& path, const nlohmann::json& report) {
  if (path.empty()) return Status::Ok();
  std::string tmp = path + ".tmp";
  {
    std::ofstream file(tmp, std::ios::trunc);
    file << report.dump(2) << "\n";
    if (!file.good()) {
      return Unavailable("cannot write --report '" + tmp +
                         "': " + std::strerror(errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Unavailable("cannot move report into place at '" + path +
                       "': " + std::strerror(errno));
  }
  return Status::Ok();
}

std::string Summary(const nlohmann::json& r) {
  std::ostringstream out;
  char numbers[256];
  for (const nlohmann::json& s : r["streams"]) {
    std::snprintf(numbers, sizeof(numbers),
                  "%.3f s, %.0f items/s, latency p50 %.2f ms p99 %.2f ms",
                  s["elapsed_s"].get<double>(), s["items_per_s"].get<double>(),
                  s["latency_ms"]["p50"].get<double>(),
                  s["latency_ms"]["p99"].get<double>());
    out << "stream " << s["stream"].get<std::string>() << ": "
        << (s["complete"].get<bool>() ? "complete" : "INCOMPLETE") << ", "
        << s["unique"] << "/" << s["expected"] << " unique, " << s["missing"]
        << " missing, " << s["failed"] << " failed, " << s["duplicates"]
        << " duplicates, arrived "
        << (s["in_order"].get<bool>() ? "in order" : "out of order") << ", "
        << numbers << "\n";
    if (s.contains("missing_seqs")) {
      out << "  missing seqs (first " << kMissingListed
          << "): " << s["missing_seqs"].dump() << "\n";
    }
  }
  std::snprintf(numbers, sizeof(numbers), "%.3f s, %.0f items/s",
                r["elapsed_s"].get<double>(), r["items_per_s"].get<double>());
  out << (r["complete"].get<bool>() ? "COMPLETE" : "INCOMPLETE") << ": "
      << r["unique"] << " of " << r["expected"] << " items in "
      << r["streams"].size() << " stream(s), " << r["missing"] << " missing, "
      << r["failed"] << " failed, " << r["dropped"] << " dropped, "
      << r["duplicates"] << " duplicates, " << numbers << ", "
      << r["written"] << " written"
      << (r["output_in_order"].get<bool>() ? "" : " (output not fully ordered)");
  uint64_t rejected = 0;
  for (const auto& [k, v] : r["rejected"].items()) rejected += v.get<uint64_t>();
  if (rejected > 0) out << ", " << rejected << " frames rejected";
  out << "\n";
  return out.str();
}

}  // namespace

nlohmann::json SinkCounters::ToJson() const {
  nlohmann::json out;
  receive.AppendTo(out);
  out["items_new"] = items_new.value();
  out["duplicates"] = duplicates.value();
  out["out_of_range"] = out_of_range.value();
  out["failed"] = failed.value();
  out["dropped"] = dropped.value();
  out["too_many_streams"] = too_many_streams.value();
  out["written"] = written.value();
  out["acks_sent"] = acks_sent.value();
  return out;
}

Status RunSink(const SinkOptions& options, StopSignal& stop,
               SinkCounters& counters, std::ostream& ready_out,
               std::ostream& progress_out, SinkOutcome& outcome) {
  auto writer = OutputWriter::Open(options.output, options.ordered,
                                   options.reorder_capacity, options.dead_letter);
  if (!writer.ok()) return writer.status();
  Accounting accounting(options, counters, std::move(*writer));

  zmq::context_t context(1);
  StatusOr<OpenedSocket> in = OpenSocket(context, zmq::socket_type::pull,
                                         options.in, options.flags.socket);
  if (!in.ok()) return in.status();
  std::optional<zmq::socket_t> ack_socket;
  std::string ack_addresses;
  if (!options.acks.empty()) {
    StatusOr<OpenedSocket> pub = OpenSocket(context, zmq::socket_type::xpub,
                                            options.acks, options.flags.socket);
    if (!pub.ok()) return pub.status();
    ack_addresses = DescribeAddresses(options.acks, *pub);
    ack_socket = std::move(pub->socket);
  }
  ready_out << "READY in=" << DescribeAddresses(options.in, *in)
            << (ack_addresses.empty() ? "" : " acks=" + ack_addresses)
            << std::endl;
  spdlog::info("listening on {}{}", DescribeAddresses(options.in, *in),
               ack_addresses.empty() ? ", acks off"
                                     : ", acks published on " + ack_addresses);

  BoundedQueue<Item> queue(options.flags.queue_capacity);
  std::atomic<bool> done{false};  // --streams K reached.

  StatusOr<ReceiveEnd> receive_end = ReceiveEnd::kStopped;
  std::thread receiver([&, socket = std::move(in->socket)]() mutable {
    ReceiveOptions receive = options.flags.receive;
    receive.idle_timeout = options.idle_timeout;
    receive_end = ReceiveLoop(socket, stop, receive, queue, counters.receive);
    queue.Close();
    socket.close();
  });

  Status account_status;
  std::thread accountant([&, ack_socket = std::move(ack_socket)]() mutable {
    AckPublisher acks(ack_socket ? &*ack_socket : nullptr, options.ack,
                      counters.acks_sent);
    std::vector<Item> items;
    auto throttle_start = std::chrono::steady_clock::now();
    uint64_t taken = 0;
    auto fail = [&](Status s) {
      account_status = std::move(s);
      stop.Request();
      queue.Close();
    };
    while (true) {
      items.clear();
      const size_t run = options.max_rate > 0 ? 1 : kAccountRun;
      std::optional<size_t> n;
      if (auto due = acks.NextDue()) {
        n = queue.PopUpToUntil(run, items, *due);
      } else {
        n = queue.PopUpTo(run, items);
      }
      if (!n) {  // An ack fell due while no item came.
        Status s = acks.ReadSubscriptions(std::chrono::steady_clock::now());
        if (s.ok()) s = accounting.PublishAcks(acks, false);
        if (!s.ok()) {
          fail(s);
          break;
        }
        continue;
      }
      if (*n == 0) break;  // Closed and drained.
      if (options.max_rate > 0) {
        // --max-rate: the deliberate throttle of a slow consumer.
        taken += items.size();
        std::this_thread::sleep_until(
            throttle_start + std::chrono::microseconds(static_cast<int64_t>(
                                 taken * 1e6 / options.max_rate)));
      }
      StatusOr<std::vector<std::string>> completed = accounting.Take(items, acks);
      if (!completed.ok()) {
        fail(completed.status());
        break;
      }
      Status s = acks.ReadSubscriptions(std::chrono::steady_clock::now());
      if (s.ok()) s = accounting.PublishAcks(acks, false);
      if (!s.ok()) {
        fail(s);
        break;
      }
      for (const std::string& id : *completed) {
        spdlog::info("stream {}: complete", id);
        Status s = WriteReport(options.report, accounting.Report());
        if (!s.ok()) spdlog::error("{}", s.message());
      }
      if (!completed->empty() && options.streams > 0 &&
          accounting.complete_streams() >= options.streams && !done) {
        done = true;
        stop.Request();  // Ends the receive loop; we drain what it queued.
      }
    }
    if (account_status.ok()) account_status = accounting.PublishAcks(acks, true);
    if (account_status.ok()) {
      // A producer whose subscription raced its items may not have heard
      // "complete" yet: give it a moment to subscribe.
      auto missing = acks.AwaitSubscribers(std::chrono::steady_clock::now() +
                                           options.ack_wait);
      if (!missing.ok()) {
        account_status = missing.status();
      } else if (!missing->empty()) {
        spdlog::warn("no producer subscribed to the acks of {} complete "
                     "stream(s) (e.g. {}); producers with --acks off need "
                     "a sink with --acks off",
                     missing->size(), missing->front());
      }
    }
    if (ack_socket) ack_socket->close();
  });

  {
    auto started = std::chrono::steady_clock::now();
    PeriodicTask progress(
        options.progress ? std::chrono::milliseconds(250)
                         : std::chrono::milliseconds(0),
        [&] { progress_out << "\r" << accounting.ProgressLine(started) << std::flush; });
    PeriodicTask stats(options.flags.stats_interval, [&] {
      spdlog::info("counters {}", counters.ToJson().dump());
    });
    receiver.join();
    accountant.join();
    if (options.progress) {
      progress_out << "\r" << accounting.ProgressLine(started) << "\n" << std::flush;
    }
  }
  TerminateContext(context, options.flags.socket.linger_ms);

  Status flushed = accounting.Flush();
  outcome.report = accounting.Report();
  outcome.summary = Summary(outcome.report);
  Status written = WriteReport(options.report, outcome.report);

  if (!account_status.ok()) return account_status;
  if (!flushed.ok()) return flushed;
  if (!written.ok()) return written;
  if (!receive_end.ok()) return receive_end.status();
  const uint64_t failed = outcome.report["failed"].get<uint64_t>();
  auto completed = [&] {
    if (failed == 0) return Status::Ok();
    return DataError("every stream completed, but " + std::to_string(failed) +
                     " items failed" +
                     (options.dead_letter.empty()
                          ? std::string(" (no --dead-letter file was given)")
                          : "; they are in " + options.dead_letter));
  };
  if (done) return completed();
  if (*receive_end == ReceiveEnd::kIdle) {
    if (outcome.report["complete"].get<bool>()) return completed();
    return Incomplete("no message for " +
                      std::to_string(options.idle_timeout->count() / 1000.0) +
                      " s with " + outcome.report["missing"].dump() +
                      " items missing");
  }
  return Cancelled("stopped");
}

}  // namespace sluice
