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

#include "common/clock.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/text.h"
#include "common/thread.h"
#include "sink/output_writer.h"
#include "sink/state_file.h"
#include "sink/stream_tracker.h"

namespace sluice {
namespace {

// Runs (frames) accounted per pass.
constexpr size_t kAccountRuns = 8;
constexpr std::chrono::milliseconds kSubscriptionPoll{50};
constexpr size_t kMissingListed = 20;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Trackers of every stream seen, shared by the sink's thread (writes) and
// the progress/report code (reads), under one mutex. Also owns the output
// and the state file, and commits what it has taken before any ack.
class Accounting {
 public:
  Accounting(const SinkOptions& options, SinkCounters& counters,
             std::unique_ptr<OutputWriter> writer,
             std::unique_ptr<StateFile> state)
      : options_(options),
        counters_(counters),
        writer_(std::move(writer)),
        state_(std::move(state)) {}

  // Before READY: rebuilds the trackers and the reorder buffers from the
  // state file (unless --fresh), cuts the files to the last commit, or
  // refuses to overwrite files that hold data the sink knows nothing of.
  Status Recover() {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t output_bytes = 0, dead_bytes = 0;
    uint64_t records = 0;
    if (state_ && !options_.fresh) {
      StatusOr<uint64_t> applied = state_->Recover(
          [&](const state::Record& r) { return Apply(r, output_bytes, dead_bytes); });
      if (!applied.ok()) return applied.status();
      records = *applied;
      if (state_->torn_bytes() > 0) {
        spdlog::warn("--state '{}': cut a torn tail of {} bytes (a commit the "
                     "last run did not finish; its items were never acked)",
                     state_->path(), state_->torn_bytes());
      }
    }
    if (records == 0 && !options_.fresh) {
      // Nothing to resume from: never overwrite what is there.
      auto refuse = [&](const std::string& flag, const std::string& path,
                        uint64_t bytes) {
        return InvalidArgument(
            flag + " '" + path + "' already holds " + std::to_string(bytes) +
            " bytes and there is no sink state to resume from" +
            (state_ ? " in '" + state_->path() + "'" : std::string()) +
            ": pass --fresh to start anew (it is cut to nothing), or choose "
            "another file");
      };
      if (writer_->existing_output_bytes() > 0) {
        return refuse("--output", options_.output, writer_->existing_output_bytes());
      }
      if (writer_->existing_dead_letter_bytes() > 0) {
        return refuse("--dead-letter", options_.dead_letter,
                      writer_->existing_dead_letter_bytes());
      }
    }
    Status s = writer_->Start(output_bytes, dead_bytes);
    if (!s.ok()) return s;
    if (state_) {
      s = state_->Start(options_.fresh);
      if (!s.ok()) return s;
    }
    for (const auto& tracker : order_) {
      if (tracker->complete()) ++complete_streams_;
    }
    if (records > 0) {
      uint64_t unique = 0;
      for (const auto& t : order_) unique += t->unique();
      spdlog::info("resumed from --state '{}': {} stream(s), {} complete, {} "
                   "items taken, output at byte {}",
                   state_->path(), order_.size(), complete_streams_, unique,
                   output_bytes);
      // The next commit replaces the log by a snapshot: recovery stays short.
      s = Snapshot();
      if (!s.ok()) return s;
    }
    counters_.written.Set(writer_->written());
    counters_.reorder_items.Set(writer_->buffered());
    return Status::Ok();
  }

  // Accounts a run of items; returns the streams that completed with it.
  StatusOr<std::vector<std::string>> Take(std::span<ItemRun> runs,
                                          AckPublisher& acks) {
    std::vector<std::string> completed;
    auto now = std::chrono::steady_clock::now();
    int64_t now_us = WallMicros();
    std::lock_guard<std::mutex> lock(mu_);
    StreamTracker* tracker = nullptr;  // Runs of one stream: look up once.
    Touched* touched = nullptr;
    for (ItemRun& run : runs) {
      for (Item& item : run) {
        if (tracker == nullptr || item.stream != tracker->id()) {
          tracker = Find(item.stream);
          if (tracker == nullptr) {
            counters_.too_many_streams.Add();
            too_many_log_.Warn("dropped an item of stream '" + Printable(item.stream) +
                               "': already tracking --max-streams streams");
            continue;
          }
          touched = &touched_[tracker];
        }
        bool was_complete = tracker->complete();
        if (item.end_of_stream) {
          const uint64_t conflicts = tracker->conflicting_ends();
          tracker->AcceptEndOfStream(item.count, now_us);
          if (tracker->conflicting_ends() > conflicts) {
            conflict_log_.Warn("stream " + Printable(tracker->id()) +
                               ": a second end-of-stream says " +
                               std::to_string(item.count) + " items, the first " +
                               std::to_string(*tracker->expected()) +
                               "; two producers on one stream id?");
          }
          if (!was_complete && tracker->beyond_count() > 0) {
            conflict_log_.Warn("stream " + Printable(tracker->id()) + ": " +
                               std::to_string(tracker->beyond_count()) +
                               " items taken before its end-of-stream are at or "
                               "beyond its count " + std::to_string(item.count));
          }
          acks.EndOfStreamTaken(tracker->id(), now);
        } else {
          switch (tracker->AcceptItem(item.seq, item.produced_at_us, now_us)) {
            case StreamTracker::Outcome::kNew: {
              counters_.items_new.Add();
              touched->taken.push_back(item.seq);
              if (!item.failure && !item.dropped &&
                  options_.output_format == OutputFormat::kLines &&
                  HoldsNewline(item)) {
                counters_.refused_newline.Add();
                item.failure = std::make_shared<ItemFailure>(ItemFailure{
                    .op = "sink",
                    .reason = "newline_in_payload",
                    .detail = "a payload holds a newline, which --output-format "
                              "lines cannot write as one line (use jsonl or lp)",
                    .worker = "sink",
                    .attempts = 1});
              }
              if (item.failure) {
                counters_.failed.Add();
                tracker->RecordFailed(item.failure->reason);
              } else if (item.dropped) {
                counters_.dropped.Add();
                tracker->RecordDropped();
              }
              const uint64_t seq = item.seq;
              const uint32_t queued_us = item.queued_us, op_us = item.op_us;
              Status s = writer_->Write(std::move(item));
              if (!s.ok()) return s;
              acks.Taken(tracker->id(), seq, queued_us, op_us, now);
              break;
            }
            case StreamTracker::Outcome::kDuplicate:
              counters_.duplicates.Add();
              acks.Duplicate(item.stream, item.seq, now);
              break;
            case StreamTracker::Outcome::kOutOfRange:
              counters_.out_of_range.Add();
              out_of_range_log_.Warn("stream " + Printable(item.stream) + ": seq " +
                                     std::to_string(item.seq) +
                                     " is beyond its end-of-stream count");
              break;
            case StreamTracker::Outcome::kBeyondWindow:
              counters_.beyond_window.Add();
              beyond_window_log_.Warn(
                  "stream " + Printable(item.stream) + ": seq " +
                  std::to_string(item.seq) + " is more than --seen-window " +
                  std::to_string(options_.seen_window) + " above its lowest "
                  "missing seq " + std::to_string(tracker->seen().lowest_absent()) +
                  "; refused (a producer resends it later)");
              break;
          }
        }
        dirty_ = true;
        const std::string& stream = tracker->id();
        if (tracker->complete()) acks.Completed(stream, now);
        if (!was_complete && tracker->complete()) {
          ++complete_streams_;
          Status s = writer_->FlushStream(stream);
          if (!s.ok()) return s;
          completed.push_back(stream);
        }
      }
    }
    counters_.written.Set(writer_->written());
    counters_.reorder_items.Set(writer_->buffered());
    return completed;
  }

  uint64_t complete_streams() const {
    std::lock_guard<std::mutex> lock(mu_);
    return complete_streams_;
  }

  // What the sink holds of `stream`, for a producer's hello: every taken
  // seq as ranges, and whether its end-of-stream came and it is complete.
  // Callers commit first, so that this never promises what a crash loses.
  void Describe(const std::string& stream, AckMessage& ack) const {
    // How far above its lowest missing seq the stream's items are taken
    // (and, ordered, buffered) without being refused or written early.
    ack.span = options_.ordered
                   ? std::min<uint64_t>(options_.seen_window, options_.reorder_capacity)
                   : options_.seen_window;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_id_.find(stream);
    if (it == by_id_.end()) return;
    const StreamTracker& t = *it->second;
    t.seen().ForEachRange([&](uint64_t begin, uint64_t end) {
      ack.ranges.emplace_back(begin, end);
    });
    ack.end_of_stream = t.expected().has_value();
    ack.complete = t.complete();
  }

  // When the next commit or ack falls due, if any.
  std::optional<std::chrono::steady_clock::time_point> NextDue(
      const AckPublisher& acks) const {
    std::optional<std::chrono::steady_clock::time_point> due = acks.NextDue();
    if (acks.enabled()) {
      // Subscriptions (producers' hellos) are read between runs of items:
      // while none come, at least this often.
      auto poll = std::chrono::steady_clock::now() + kSubscriptionPoll;
      if (!due || poll < *due) due = poll;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (dirty_) {
      auto commit = last_commit_ + options_.commit_interval;
      if (!due || commit < *due) due = commit;
    }
    return due;
  }

  // Commits what was taken (if an ack or the commit interval is due), then
  // publishes the acks that are due: an ack never runs ahead of a commit.
  Status CommitAndPublish(AckPublisher& acks, bool all) {
    auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (dirty_ && (all || acks.Due(now) ||
                     now >= last_commit_ + options_.commit_interval)) {
        Status s = Commit(now);
        if (!s.ok()) return s;
      }
    }
    return acks.Publish(now, all);
  }

  // Writes out what the reorder buffers hold and commits (at exit).
  Status Flush() {
    std::lock_guard<std::mutex> lock(mu_);
    Status s = writer_->FlushAll();
    counters_.written.Set(writer_->written());
    counters_.reorder_items.Set(writer_->buffered());
    if (s.ok()) s = Commit(std::chrono::steady_clock::now());
    return s;
  }

  nlohmann::json Report() const {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now_us = WallMicros();
    nlohmann::json streams = nlohmann::json::array();
    Totals totals;
    for (const auto& tracker : order_) {
      nlohmann::json s = Fields(*tracker, now_us);
      s["stream"] = Printable(tracker->id());
      s["end_of_stream_seen"] = tracker->expected().has_value();
      if (tracker->expected() && !tracker->complete()) {
        s["missing_seqs"] = tracker->MissingSeqs(kMissingListed);
      }
      streams.push_back(std::move(s));
      totals.Add(*tracker);
    }
    nlohmann::json report;
    bool enough = options_.streams == 0 || complete_streams_ >= options_.streams;
    report["complete"] = totals.all_complete && enough;
    report["expected"] = totals.expected;
    report["received"] = totals.received;
    report["unique"] = totals.unique;
    report["duplicates"] = totals.duplicates;
    report["missing"] = totals.missing;
    report["in_order"] = totals.in_order;
    double elapsed = 0;
    if (totals.first_us) {
      int64_t end = totals.all_complete && totals.last_us ? totals.last_us : now_us;
      elapsed = std::max<int64_t>(0, end - totals.first_us) / 1e6;
    }
    report["elapsed_s"] = elapsed;
    report["items_per_s"] = elapsed > 0 ? totals.unique / elapsed : 0.0;
    report["latency_ms"] = {{"p50", totals.latency.Quantile(0.5) / 1000},
                            {"p99", totals.latency.Quantile(0.99) / 1000}};
    report["streams_complete"] = complete_streams_;
    report["streams_seen"] = order_.size();
    report["out_of_range"] = totals.out_of_range;
    report["beyond_count"] = totals.beyond_count;
    report["beyond_window"] = totals.beyond_window;
    report["conflicting_ends"] = totals.conflicting_ends;
    report["errors"] = totals.errors;
    report["failed"] = totals.failed;
    report["failed_by_reason"] = totals.failed_by_reason;
    report["dropped"] = totals.dropped;
    report["dead_letters_written"] = writer_->dead_letters();
    report["written"] = writer_->written();
    report["output_in_order"] = writer_->output_in_order();
    report["output_format"] = OutputFormatName(options_.output_format);
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
  // What changed in a stream since the last commit.
  struct Touched {
    std::vector<uint64_t> taken;  // New seqs, in arrival order.
  };

  struct Totals {
    uint64_t expected = 0, received = 0, unique = 0, duplicates = 0,
             missing = 0, out_of_range = 0, failed = 0, dropped = 0,
             beyond_count = 0, beyond_window = 0, conflicting_ends = 0,
             errors = 0;
    std::map<std::string, uint64_t> failed_by_reason;
    bool in_order = true, all_complete = true;
    int64_t first_us = 0, last_us = 0;
    LatencyHistogram latency;
    void Add(const StreamTracker& t) {
      expected += t.expected().value_or(0);
      received += t.received();
      unique += t.unique();
      duplicates += t.duplicates();
      missing += t.missing();
      out_of_range += t.out_of_range();
      beyond_count += t.beyond_count();
      beyond_window += t.beyond_window();
      conflicting_ends += t.conflicting_ends();
      errors += t.errors();
      failed += t.failed();
      dropped += t.dropped();
      for (const auto& [reason, n] : t.failed_by_reason()) {
        failed_by_reason[Printable(reason)] += n;
      }
      in_order = in_order && t.in_order();
      all_complete = all_complete && t.complete();
      const StreamStats& s = t.stats();
      if (s.first_unix_us && (!first_us || s.first_unix_us < first_us)) {
        first_us = s.first_unix_us;
      }
      if (s.completed_unix_us > last_us) last_us = s.completed_unix_us;
      latency.Merge(t.latency());
    }
  };

  static bool HoldsNewline(const Item& item) {
    if (item.payload.find('\n') != std::string::npos) return true;
    for (const std::string& more : item.more_payloads) {
      if (more.find('\n') != std::string::npos) return true;
    }
    return false;
  }

  static nlohmann::json Fields(const StreamTracker& t, int64_t now_us) {
    nlohmann::json s;
    s["complete"] = t.complete();
    s["expected"] = t.expected().value_or(0);
    s["received"] = t.received();
    s["unique"] = t.unique();
    s["duplicates"] = t.duplicates();
    s["missing"] = t.missing();
    s["in_order"] = t.in_order();
    double elapsed = t.ElapsedSeconds(now_us);
    s["elapsed_s"] = elapsed;
    s["items_per_s"] = elapsed > 0 ? t.unique() / elapsed : 0.0;
    s["latency_ms"] = {{"p50", t.latency().Quantile(0.5) / 1000},
                       {"p99", t.latency().Quantile(0.99) / 1000}};
    s["out_of_range"] = t.out_of_range();
    s["beyond_count"] = t.beyond_count();
    s["beyond_window"] = t.beyond_window();
    s["conflicting_ends"] = t.conflicting_ends();
    s["errors"] = t.errors();
    s["after_end_of_stream"] = t.after_end_of_stream();
    s["failed"] = t.failed();
    nlohmann::json reasons = nlohmann::json::object();
    for (const auto& [reason, n] : t.failed_by_reason()) reasons[Printable(reason)] = n;
    s["failed_by_reason"] = std::move(reasons);
    s["dropped"] = t.dropped();
    return s;
  }

  StreamTracker* Find(const std::string& id) {  // REQUIRES: mu_ held.
    auto it = by_id_.find(id);
    if (it != by_id_.end()) return it->second;
    if (order_.size() >= options_.max_streams) return nullptr;
    order_.push_back(std::make_unique<StreamTracker>(id, options_.seen_window));
    by_id_.emplace(id, order_.back().get());
    spdlog::info("stream {}: first message", Printable(id));
    return order_.back().get();
  }

  // --- The state file. REQUIRES: mu_ held for all below. ---

  state::Shape Shape() const {
    state::Shape shape;
    shape.set_ordered(options_.ordered);
    shape.set_output_format(std::string(OutputFormatName(options_.output_format)));
    return shape;
  }

  static void SaveStats(const StreamTracker& t, state::Stats& out) {
    const StreamStats& s = t.stats();
    out.set_received(s.received);
    out.set_duplicates(s.duplicates);
    out.set_out_of_range(s.out_of_range);
    out.set_beyond_window(s.beyond_window);
    out.set_conflicting_ends(s.conflicting_ends);
    out.set_after_end(s.after_end);
    out.set_failed(s.failed);
    out.set_dropped(s.dropped);
    for (const auto& [reason, n] : s.failed_by_reason) {
      state::Reason* r = out.add_failed_by_reason();
      r->set_reason(reason);
      r->set_count(n);
    }
    if (s.highest_seq) out.set_highest_seq(*s.highest_seq);
    out.set_out_of_order(!s.in_order);
    out.set_first_unix_us(s.first_unix_us);
    out.set_completed_unix_us(s.completed_unix_us);
    for (const auto& [bucket, n] : t.latency().Buckets()) {
      out.add_latency(bucket);
      out.add_latency(n);
    }
  }

  static void RestoreStats(const state::Stats& in, StreamTracker& t) {
    StreamStats s;
    s.received = in.received();
    s.duplicates = in.duplicates();
    s.out_of_range = in.out_of_range();
    s.beyond_window = in.beyond_window();
    s.conflicting_ends = in.conflicting_ends();
    s.after_end = in.after_end();
    s.failed = in.failed();
    s.dropped = in.dropped();
    for (const state::Reason& r : in.failed_by_reason()) {
      if (s.failed_by_reason.size() < StreamTracker::kMaxReasons + 1) {
        s.failed_by_reason[r.reason()] = r.count();
      }
    }
    if (in.has_highest_seq()) s.highest_seq = in.highest_seq();
    s.in_order = !in.out_of_order();
    s.first_unix_us = in.first_unix_us();
    s.completed_unix_us = in.completed_unix_us();
    t.RestoreStats(s);
    t.mutable_latency() = LatencyHistogram();
    for (int i = 0; i + 1 < in.latency_size(); i += 2) {
      t.mutable_latency().AddBucket(static_cast<uint32_t>(in.latency(i)),
                                    in.latency(i + 1));
    }
  }

  static void AddRanges(std::vector<uint64_t>& seqs, state::Stream& out) {
    std::sort(seqs.begin(), seqs.end());
    size_t i = 0;
    while (i < seqs.size()) {
      uint64_t begin = seqs[i];
      uint64_t end = begin + 1;
      while (++i < seqs.size() && seqs[i] <= end) end = std::max(end, seqs[i] + 1);
      out.add_taken(begin);
      out.add_taken(end);
    }
  }

  static void SaveHeld(const Item& item, state::Stream& out) {
    state::Held* held = out.add_held();
    held->set_seq(item.seq);
    if (item.output_count() == 0) return;
    held->add_outputs(item.payload);
    for (const std::string& more : item.more_payloads) held->add_outputs(more);
  }

  void SaveWriter(state::Record& record) const {
    record.set_output_bytes(writer_->output_bytes());
    record.set_dead_letter_bytes(writer_->dead_letter_bytes());
    record.set_written(writer_->written());
    record.set_dead_letters(writer_->dead_letters());
    record.set_output_out_of_order(!writer_->output_in_order());
    *record.mutable_shape() = Shape();
  }

  Status Apply(const state::Record& r, uint64_t& output_bytes,
               uint64_t& dead_bytes) {
    if (r.has_shape() && (r.shape().ordered() != options_.ordered ||
                          r.shape().output_format() !=
                              OutputFormatName(options_.output_format))) {
      return InvalidArgument(
          "--state '" + state_->path() + "' belongs to a sink run with " +
          (r.shape().ordered() ? "--ordered" : "no --ordered") +
          " and --output-format " + r.shape().output_format() +
          ": restart with the same flags, or pass --fresh to start anew");
    }
    if (r.snapshot()) {
      order_.clear();
      by_id_.clear();
    }
    output_bytes = r.output_bytes();
    dead_bytes = r.dead_letter_bytes();
    writer_->RestoreCounts(r.written(), r.dead_letters(), !r.output_out_of_order());
    for (const state::Stream& s : r.streams()) {
      StreamTracker* t = Find(s.id());
      if (t == nullptr) {
        return DataError("--state '" + state_->path() + "' holds more than "
                         "--max-streams streams");
      }
      for (int i = 0; i + 1 < s.taken_size(); i += 2) {
        t->RestoreSeen(s.taken(i), s.taken(i + 1));
      }
      if (s.has_count() && !t->expected()) t->RestoreCount(s.count());
      RestoreStats(s.stats(), *t);
      if (options_.ordered) {
        for (const state::Held& h : s.held()) {
          Item item;
          item.stream = s.id();
          item.seq = h.seq();
          if (h.outputs_size() == 0) {
            item.dropped = true;  // Holds its place, writes nothing.
          } else {
            item.payload = h.outputs(0);
            for (int i = 1; i < h.outputs_size(); ++i) item.AddOutput(h.outputs(i));
          }
          writer_->RestoreHeld(s.id(), std::move(item));
        }
        writer_->RestoreNext(s.id(), s.write_next());
      }
    }
    return Status::Ok();
  }

  // A stream's entry in `record`: all but its taken seqs and held items.
  state::Stream& SaveStream(const StreamTracker& tracker, state::Record& record,
                            std::unordered_map<std::string, state::Stream*>& by_stream) {
    state::Stream* out = record.add_streams();
    out->set_id(tracker.id());
    if (tracker.expected()) out->set_count(*tracker.expected());
    SaveStats(tracker, *out->mutable_stats());
    if (options_.ordered) out->set_write_next(writer_->WriteNext(tracker.id()));
    by_stream.emplace(tracker.id(), out);
    return *out;
  }

  // Appends a record of what changed since the last commit; replaces the
  // log by a snapshot once it has grown well past the state's size.
  Status Commit(std::chrono::steady_clock::time_point now) {
    last_commit_ = now;
    dirty_ = false;
    Status s = writer_->FlushFile();
    if (s.ok() && options_.durability == Durability::kFsync) s = writer_->Sync();
    if (!s.ok() || !state_) {
      touched_.clear();
      return s;
    }
    const uint64_t threshold =
        std::max<uint64_t>(kMinCompactBytes, 4 * state_->snapshot_bytes());
    if (state_->bytes() >= threshold) return Snapshot();
    state::Record record;
    SaveWriter(record);
    std::unordered_map<std::string, state::Stream*> by_stream;
    for (auto& [tracker, touched] : touched_) {
      AddRanges(touched.taken, SaveStream(*tracker, record, by_stream));
    }
    if (options_.ordered) {
      writer_->TakeNewlyHeld([&](const std::string& stream, uint64_t, const Item& item) {
        auto it = by_stream.find(stream);
        if (it != by_stream.end()) SaveHeld(item, *it->second);
      });
    }
    touched_.clear();
    counters_.commits.Add();
    return state_->Append(record);
  }

  // Replaces the log by one record holding the whole state.
  Status Snapshot() {
    if (!state_) return Status::Ok();
    state::Record record;
    record.set_snapshot(true);
    SaveWriter(record);
    std::unordered_map<std::string, state::Stream*> by_stream;
    for (const auto& tracker : order_) {
      state::Stream& out = SaveStream(*tracker, record, by_stream);
      tracker->seen().ForEachRange([&](uint64_t begin, uint64_t end) {
        out.add_taken(begin);
        out.add_taken(end);
      });
    }
    if (options_.ordered) {
      writer_->TakeNewlyHeld([](const std::string&, uint64_t, const Item&) {});
      writer_->ForEachHeld([&](const std::string& stream, uint64_t, const Item& item) {
        auto it = by_stream.find(stream);
        if (it != by_stream.end()) SaveHeld(item, *it->second);
      });
    }
    touched_.clear();
    counters_.commits.Add();
    return state_->Rewrite(record);
  }

  // The log is compacted once it reaches max(this, 4 x the last snapshot).
  static constexpr uint64_t kMinCompactBytes = 8 << 20;

  const SinkOptions& options_;
  SinkCounters& counters_;
  mutable std::mutex mu_;
  std::unique_ptr<OutputWriter> writer_;                        // Guarded by mu_.
  std::unique_ptr<StateFile> state_;                            // Guarded by mu_.
  std::vector<std::unique_ptr<StreamTracker>> order_;           // Guarded by mu_.
  std::unordered_map<std::string, StreamTracker*> by_id_;       // Guarded by mu_.
  std::unordered_map<StreamTracker*, Touched> touched_;         // Guarded by mu_.
  bool dirty_ = false;                                          // Guarded by mu_.
  std::chrono::steady_clock::time_point last_commit_{};         // Guarded by mu_.
  uint64_t complete_streams_ = 0;                               // Guarded by mu_.
  RateLimitedLog too_many_log_{"sink.too_many_streams", std::chrono::seconds(1)};
  RateLimitedLog out_of_range_log_{"sink.out_of_range", std::chrono::seconds(1)};
  RateLimitedLog beyond_window_log_{"sink.beyond_window", std::chrono::seconds(1)};
  RateLimitedLog conflict_log_{"sink.stream_conflict", std::chrono::seconds(1)};
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
  // A stream's size is known only from its end-of-stream.
  size_t without_end = 0;
  for (const nlohmann::json& s : r["streams"]) {
    const bool known = s["end_of_stream_seen"].get<bool>();
    if (!known) ++without_end;
    std::snprintf(numbers, sizeof(numbers),
                  "%.3f s, %.0f items/s, latency p50 %.2f ms p99 %.2f ms",
                  s["elapsed_s"].get<double>(), s["items_per_s"].get<double>(),
                  s["latency_ms"]["p50"].get<double>(),
                  s["latency_ms"]["p99"].get<double>());
    out << "stream " << s["stream"].get<std::string>() << ": "
        << (s["complete"].get<bool>() ? "complete" : "INCOMPLETE") << ", "
        << s["unique"] << "/" << (known ? s["expected"].dump() : "unknown")
        << " unique, " << s["missing"]
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
      << r["unique"] << " of "
      << (without_end == 0 ? r["expected"].dump() : std::string("unknown")) << " items in "
      << r["streams"].size() << " stream(s)"
      << (without_end == 0 ? std::string()
                           : " (" + std::to_string(without_end) +
                                 " without an end-of-stream yet)")
      << ", " << r["missing"] << " missing, "
      << r["failed"] << " failed, " << r["dropped"] << " dropped, "
      << r["duplicates"] << " duplicates, " << numbers << ", "
      << r["written"] << " written"
      << (r["output_in_order"].get<bool>() ? "" : " (output not fully ordered)");
  uint64_t rejected = 0;
  for (const auto& [k, v] : r["rejected"].items()) rejected += v.get<uint64_t>();
  if (rejected > 0) out << ", " << rejected << " frames rejected";
  if (r["errors"].get<uint64_t>() > 0) {
    out << ", " << r["errors"] << " ERRORS ("
        << r["beyond_count"].get<uint64_t>() + r["out_of_range"].get<uint64_t>()
        << " items beyond a count, " << r["conflicting_ends"]
        << " conflicting end-of-stream)";
  }
  out << "\n";
  return out.str();
}

// Fails at once, before READY, if the report could not be written at the
// end: its folder must exist and take a new file.
Status CheckReportWritable(const std::string& path) {
  if (path.empty()) return Status::Ok();
  const std::string tmp = path + ".tmp";
  std::FILE* file = std::fopen(tmp.c_str(), "we");
  if (file == nullptr) {
    return InvalidArgument("cannot write --report '" + path + "' (tried '" +
                           tmp + "'): " + std::strerror(errno));
  }
  std::fclose(file);
  std::remove(tmp.c_str());
  return Status::Ok();
}

// The run's status from its report: never OK while the report says
// incomplete; kDataError when complete but with failed items or errors.
Status Verdict(const SinkOptions& options, const nlohmann::json& r, bool done,
               bool idle) {
  const uint64_t failed = r["failed"].get<uint64_t>();
  const uint64_t errors = r["errors"].get<uint64_t>();
  if (r["complete"].get<bool>()) {
    if (errors > 0) {
      return DataError(
          "every stream completed, but with " + std::to_string(errors) +
          " errors: " + r["beyond_count"].dump() + " items taken and " +
          r["out_of_range"].dump() + " refused beyond a stream's "
          "end-of-stream count, and " +
          r["conflicting_ends"].dump() +
          " conflicting end-of-stream counts (see the report); a faulty "
          "producer or two producers on one stream id");
    }
    if (failed > 0) {
      return DataError("every stream completed, but " + std::to_string(failed) +
                       " items failed" +
                       (options.dead_letter.empty()
                            ? std::string(" (no --dead-letter file was given)")
                            : "; they are in " + options.dead_letter));
    }
    return Status::Ok();
  }
  std::string incomplete;
  for (const nlohmann::json& s : r["streams"]) {
    if (s["complete"].get<bool>()) continue;
    if (!incomplete.empty()) incomplete += ", ";
    incomplete += s["stream"].get<std::string>() + " (" + s["missing"].dump() +
                  " missing" +
                  (s["end_of_stream_seen"].get<bool>() ? "" : ", no end-of-stream") +
                  ")";
  }
  const std::string which =
      incomplete.empty()
          ? std::to_string(r["streams_complete"].get<uint64_t>()) + " of " +
                std::to_string(options.streams) + " streams complete"
          : "incomplete: " + incomplete;
  if (idle) {
    return Incomplete("no message for " +
                      std::to_string(options.idle_timeout->count() / 1000.0) +
                      " s; " + which);
  }
  if (done) {
    return Incomplete(std::to_string(options.streams) +
                      " stream(s) completed, but others did not; " + which);
  }
  return Incomplete("stopped; " + which);
}

}  // namespace

nlohmann::json SinkCounters::ToJson() const {
  nlohmann::json out;
  receive.AppendTo(out);
  out["items_new"] = items_new.value();
  out["duplicates"] = duplicates.value();
  out["out_of_range"] = out_of_range.value();
  out["beyond_window"] = beyond_window.value();
  out["refused_newline"] = refused_newline.value();
  out["commits"] = commits.value();
  out["failed"] = failed.value();
  out["dropped"] = dropped.value();
  out["too_many_streams"] = too_many_streams.value();
  out["written"] = written.value();
  out["curve_refused"] = curve_refused.value();
  out["handshake_failed"] = handshake_failed.value();
  out["acks_sent"] = acks.acks_sent.value();
  out["hellos"] = acks.hellos.value();
  out["hellos_rejected"] = acks.hellos_rejected.value();
  out["rejected_subscriptions"] = acks.rejected_subscriptions.value();
  out["gauges"] = {{"reorder_items", reorder_items.value()}};
  return out;
}

Status RunSink(const SinkOptions& options, StopSignal& stop,
               SinkCounters& counters, std::ostream& ready_out,
               std::ostream& progress_out, SinkOutcome& outcome) {
  // Files first: locked before anything else is touched, and nothing cut
  // before the sockets are bound, so a second sink started by mistake
  // changes nothing.
  auto writer = OutputWriter::Open(OutputOptions{.path = options.output,
                                                 .dead_letter = options.dead_letter,
                                                 .ordered = options.ordered,
                                                 .reorder_capacity = options.reorder_capacity,
                                                 .format = options.output_format});
  if (!writer.ok()) return writer.status();
  std::unique_ptr<StateFile> state;
  if (!options.state.empty()) {
    auto opened = StateFile::Open(options.state, options.durability);
    if (!opened.ok()) return opened.status();
    state = std::move(*opened);
  }
  if (Status s = CheckReportWritable(options.report); !s.ok()) return s;
  Accounting accounting(options, counters, std::move(*writer), std::move(state));

  zmq::context_t context(1);
  auto guards = ContextGuards::Start(context, options.flags.socket, counters.curve_refused,
                                     counters.handshake_failed);
  if (!guards.ok()) return guards.status();
  StatusOr<OpenedSocket> in = OpenSocket(context, zmq::socket_type::pull,
                                         options.in, guards->For("in"));
  if (!in.ok()) return in.status();
  std::optional<zmq::socket_t> ack_socket;
  std::string ack_addresses;
  if (!options.acks.empty()) {
    StatusOr<OpenedSocket> pub = OpenSocket(context, zmq::socket_type::xpub,
                                            options.acks, guards->For("acks"));
    if (!pub.ok()) return pub.status();
    ack_addresses = DescribeAddresses(options.acks, *pub);
    ack_socket = std::move(pub->socket);
  }
  if (Status s = accounting.Recover(); !s.ok()) return s;
  ready_out << "READY in=" << DescribeAddresses(options.in, *in)
            << (ack_addresses.empty() ? "" : " acks=" + ack_addresses)
            << std::endl;
  spdlog::info("listening on {}{}", DescribeAddresses(options.in, *in),
               ack_addresses.empty() ? ", acks off"
                                     : ", acks published on " + ack_addresses);

  RunPool pool;
  std::atomic<bool> done{false};  // --streams K reached.
  if (options.streams > 0 && accounting.complete_streams() >= options.streams) {
    spdlog::info("the state already holds {} complete stream(s): nothing to "
                 "wait for", accounting.complete_streams());
    done = true;
    stop.Request();
  }

  // One thread receives and accounts: a frame is taken on the thread that
  // read it (no hand-off, so no wake-up of another thread per frame); the
  // output, the state file and the acks are written between reads. While it
  // writes, frames wait in the socket, and a full socket stops the senders
  // upstream: that is the backpressure.
  StatusOr<ReceiveEnd> receive_end = ReceiveEnd::kStopped;
  Status account_status;
  auto accountant = StartThread("sink", [&, socket = std::move(in->socket),
                                         ack_socket = std::move(ack_socket)]() mutable {
    AckPublisher acks(ack_socket ? &*ack_socket : nullptr, options.ack,
                      counters.acks,
                      [&](const std::string& stream, AckMessage& ack) {
                        accounting.Describe(stream, ack);
                      });
    ReceiveOptions receive = options.flags.receive;
    receive.idle_timeout = options.idle_timeout;
    FrameReceiver receiver(socket, stop, receive, counters.receive);
    std::vector<ItemRun> runs;
    auto throttle_start = std::chrono::steady_clock::now();
    uint64_t taken = 0;
    auto fail = [&](Status s) {
      account_status = std::move(s);
      stop.Request();
    };
    while (!stop.requested()) {
      for (ItemRun& r : runs) pool.Put(std::move(r));
      runs.clear();
      // A frame, waiting at most until a commit or an ack falls due (or the
      // idle timeout), then a few more if they have arrived.
      StatusOr<std::optional<ReceiveEnd>> got = receiver.Receive(
          runs, pool, options.max_rate > 0 ? 1 : kAccountRuns, accounting.NextDue(acks));
      if (!got.ok()) {
        receive_end = got.status();
        stop.Request();
        break;
      }
      if (*got) {
        receive_end = **got;
        break;
      }
      if (runs.empty()) {  // A commit or an ack fell due (or a frame was refused).
        Status s = acks.ReadSubscriptions(std::chrono::steady_clock::now());
        if (s.ok()) s = accounting.CommitAndPublish(acks, false);
        if (!s.ok()) {
          fail(s);
          break;
        }
        continue;
      }
      if (options.max_rate > 0) {
        // --max-rate: the deliberate throttle of a slow consumer.
        for (const ItemRun& r : runs) taken += r.size();
        std::this_thread::sleep_until(
            throttle_start + std::chrono::microseconds(static_cast<int64_t>(
                                 taken * 1e6 / options.max_rate)));
      }
      StatusOr<std::vector<std::string>> completed = accounting.Take(runs, acks);
      if (!completed.ok()) {
        fail(completed.status());
        break;
      }
      Status s = acks.ReadSubscriptions(std::chrono::steady_clock::now());
      if (s.ok()) s = accounting.CommitAndPublish(acks, !completed->empty());
      if (!s.ok()) {
        fail(s);
        break;
      }
      for (const std::string& id : *completed) {
        spdlog::info("stream {}: complete", Printable(id));
        Status s = WriteReport(options.report, accounting.Report());
        if (!s.ok()) spdlog::error("{}", s.message());
      }
      if (!completed->empty() && options.streams > 0 &&
          accounting.complete_streams() >= options.streams && !done) {
        done = true;
        stop.Request();
      }
    }
    socket.close();
    if (account_status.ok()) account_status = accounting.Flush();
    if (account_status.ok()) account_status = accounting.CommitAndPublish(acks, true);
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
                     missing->size(), Printable(missing->front()));
      }
    }
    if (ack_socket) ack_socket->close();
  });
  if (!accountant.ok()) return accountant.status();

  {
    auto started = std::chrono::steady_clock::now();
    PeriodicTask progress(
        options.progress ? std::chrono::milliseconds(250)
                         : std::chrono::milliseconds(0),
        [&] { progress_out << "\r" << accounting.ProgressLine(started) << std::flush; });
    PeriodicTask stats(options.flags.stats_interval, [&] {
      spdlog::info("counters {}", counters.ToJson().dump());
    });
    accountant->join();
    if (options.progress) {
      progress_out << "\r" << accounting.ProgressLine(started) << "\n" << std::flush;
    }
  }
  guards->Stop();
  TerminateContext(context, options.flags.socket.linger_ms);

  outcome.report = accounting.Report();
  outcome.summary = Summary(outcome.report);
  Status written = WriteReport(options.report, outcome.report);

  if (!account_status.ok()) return account_status;
  if (!written.ok()) return written;
  if (!receive_end.ok()) return receive_end.status();
  return Verdict(options, outcome.report, done,
                 *receive_end == ReceiveEnd::kIdle);
}

}  // namespace sluice
