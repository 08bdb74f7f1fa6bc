// producer/inflight_window.h
//
// InflightWindow holds what it takes to send again every item the producer
// has sent and the sink has not yet acknowledged: per seq, a compact entry
// (its payload, production time and failure, if any, plus the bookkeeping
// of loss detection), not a whole Item, so that a window of tens of
// thousands of items stays a few MiB and recording a run costs little more
// than copying its payloads. The window belongs to one stream (that of the
// first item added). Like TCP's
// window it spans sequence numbers: nothing at or beyond (lowest
// unacknowledged seq + capacity) is sent. So no more than `capacity` items
// are anywhere in the pipeline, whatever the high-water marks, and the
// sink's reorder buffer, which only holds items above the lowest missing
// one, never needs more than `capacity` either.
//
// Loss detection, so that a slow but healthy pipeline never sets off a
// resend while a lost item is found quickly. Parallel workers finish items
// out of order as a matter of course, so being overtaken is no sign of loss
// by itself (TCP's RACK, which this started from, assumes one path):
//  - an entry is overdue, and sent again, once an entry sent after it has
//    been acknowledged and it has waited longer than `overdue_factor` x the
//    longest round trip of recent first transmissions, plus the minimum RTO.
//    The factor starts at 2 and grows (to 8) each time the sink reports a
//    duplicate, i.e. a resend that was not needed (as TCP's D-SACK tells a
//    sender); it shrinks again after a quiet spell;
//  - if no ack makes progress for a retransmit timeout (RTO), the entries
//    older than the RTO are sent again, and the RTO doubles until progress
//    resumes. The RTO adapts to the ack latency (RFC 6298: smoothed RTT + 4 x
//    variation, clamped to [min, max]; Karn's rule: only first transmissions
//    are timed).
//
// Flow control bounds how much of the pipeline's work waits in queues, so
// that no worker hoards items its siblings could take, a frozen worker holds
// only a few, and round trips stay short. Stages stamp each item with the
// time it waited for a slow op (Item::queued_us) and spent in ops (op_us);
// the sink sums both into its acks. limit() caps the items outstanding: it
// starts at FlowOptions::initial_limit, grows with each ack while the items
// barely wait, and otherwise moves, once per round trip, by the measured
// throughput x (target wait - measured wait), Little's law. The target wait
// is 4 x the measured op time per item (round-robin hands items to workers
// in turn, so each keeps a few ready), at least 1 ms, and at least the
// time between two acks: the limit counts items that are done and only
// wait for the sink's next ack batch, and the workers must not run dry
// while they do. Cheap ops are not timed: a pipeline of them sees no
// waiting and gets the whole capacity, unless the round trip grows more
// than 100 ms beyond the shortest recent one: then something downstream
// (a slow sink) queues what the stages do not measure, and the limit moves
// by the same law to hold that excess at 100 ms.
//
// The end-of-stream is an entry like the items (outside the capacity).
//
// The span of seqs outstanding may exceed the capacity, up to what the sink
// says it takes (FlowOptions::span): a few items held back, waiting in a
// stage for a retry, must not hold the producer to `capacity` seqs per
// backoff. The ring holds the newest `capacity` seqs; an item still
// outstanding when the ring moves past it (a straggler) moves to a map.
// The flow limit (<= capacity) bounds the items outstanding in the ring;
// stragglers, which wait without holding an op's thread, are bounded apart
// (at most `capacity` of them).
//
// Thread safety: all methods may be called from any thread; the producer's
// ack reader calls Ack(), its sending loop the rest.
#ifndef SLUICE_PRODUCER_INFLIGHT_WINDOW_H_
#define SLUICE_PRODUCER_INFLIGHT_WINDOW_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/envelope_codec.h"
#include "common/item.h"

namespace sluice {

struct RetransmitOptions {
  std::chrono::milliseconds initial_rto{1000};
  std::chrono::milliseconds min_rto{200};
  std::chrono::milliseconds max_rto{30000};
};

struct FlowOptions {
  size_t initial_limit = 1024;  // Items outstanding before any ack.
  // Payload bytes outstanding, so that long items cannot make the window's
  // copies grow without bound; one item is always let through.
  size_t max_bytes = size_t{64} << 20;
  size_t min_limit = 8;
  size_t peers = 1;  // Workers the output feeds, as far as known (--peers).
  // How far above the lowest unacknowledged seq items may be sent: the
  // sink's word (Ack.span); 0 (unknown): the capacity.
  uint64_t span = 0;
};

class InflightWindow {
 public:
  using Clock = std::chrono::steady_clock;

  InflightWindow(size_t capacity, const RetransmitOptions& options,
                 const FlowOptions& flow = FlowOptions());
  InflightWindow(const InflightWindow&) = delete;
  InflightWindow& operator=(const InflightWindow&) = delete;

  // Data items that may still be added now: the flow limit minus the items
  // outstanding, and at most the span (FlowOptions::span) minus that from
  // the lowest unacknowledged seq to the next one to add; 0 while the payloads
  // outstanding reach FlowOptions::max_bytes.
  size_t room() const;
  // The flow limit: most data items outstanding now (<= capacity).
  size_t limit() const;
  // Most items per frame now: small while the limit is small against the
  // peers it is spread over (so that round-robin hands each worker a fair
  // share), up to `batch_items`.
  size_t FrameItems(size_t batch_items) const;
  // How many of `items` (in increasing seq order), from the front, may be
  // added now: no more than the flow limit allows, and the span from the
  // lowest unacknowledged seq (or the first item's, if none is outstanding)
  // must stay below FlowOptions::span, and the payloads within max_bytes (the
  // first item fits an empty window whatever its size). Matters when seqs
  // skip (a resumed stream), and for long items: room() alone counts a gap
  // as used and knows no sizes.
  size_t Fitting(std::span<const Item> items) const;
  // Records `items` as sent at `now` (under one lock); keeps copies of their
  // payloads. Data items come in increasing seq order and need room() and
  // Fitting(); all are of one stream.
  void Add(std::span<const Item> items, Clock::time_point now);
  void Add(const Item& item, Clock::time_point now) {
    Add(std::span<const Item>(&item, 1), now);
  }
  // Releases what `ack` acknowledges; returns how many entries it released.
  size_t Ack(const AckMessage& ack, Clock::time_point now);
  // Appends up to `max` entries found lost at `now` to `out` (as items
  // again) and records them as sent again at `now`. Returns the count.
  size_t TakeExpired(Clock::time_point now, size_t max, std::vector<Item>& out);
  // When an entry may next be found lost; nullopt if nothing is outstanding.
  std::optional<Clock::time_point> NextExpiry();
  // Blocks until an ack releases something or `deadline` passes.
  void WaitForAck(std::optional<Clock::time_point> deadline);

  bool empty() const;
  size_t size() const;  // Outstanding entries, end-of-stream included.
  // Last time an ack released something (or the window went non-empty).
  Clock::time_point last_progress() const;
  std::chrono::milliseconds rto() const;
  uint64_t retransmits() const;
  // Duplicates the sink reported (resends that were not needed).
  uint64_t duplicates_reported() const;
  // How many longest-recent-round-trips an overtaken entry may wait.
  int overdue_factor() const;
  // Mean time items waited in stages, per the latest acks; microseconds.
  double queued_us() const;
  // "3 items (seq 5, 9, 12) and the end-of-stream".
  std::string DescribeOutstanding(size_t max_listed) const;

 private:
  static constexpr uint64_t kEndKey = UINT64_MAX;
  // 56 bytes; an Item is 144. Failures, rare, live in failures_.
  struct Entry {
    std::string payload;
    Clock::time_point sent_at;
    int64_t produced_at_us = 0;
    int attempts = 0;
    bool outstanding = false;
  };
  // Transmissions at one time, in the order of sending: keys [key, key +
  // count) (a run's first transmissions share one), sent for the
  // `attempts`th time.
  struct Sent {
    Clock::time_point at;
    uint64_t key;
    uint64_t count;
    int attempts;
  };
  Entry* Find(uint64_t key);  // Outstanding entry or null. REQUIRES: mu_.
  Item ItemOf(uint64_t key, const Entry& e) const;  // REQUIRES: mu_.
  void AddOne(const Item& item, Clock::time_point now);  // REQUIRES: mu_.
  // The longest and the shortest round trip of the first transmissions an
  // ack released.
  struct RttSamples {
    std::optional<Clock::duration> longest, shortest;
  };
  bool Release(uint64_t key, Clock::time_point now,
               RttSamples& sample);  // REQUIRES: mu_.
  // The next moment something may be found lost. REQUIRES: mu_.
  std::optional<Clock::time_point> NextCheck();
  Clock::duration Rto() const;           // With backoff. REQUIRES: mu_.
  // How long an overtaken entry may wait before it is sent again.
  Clock::duration Overdue() const;       // REQUIRES: mu_.
  void PruneSent();                      // REQUIRES: mu_.
  // Length of a period of the longest-RTT window: max(1 s, 8 x srtt).
  Clock::duration Period() const;        // REQUIRES: mu_.
  // Data items the flow limit lets through now. REQUIRES: mu_.
  size_t FlowRoom() const;
  // Moves what is outstanding below `lo` out of the ring. REQUIRES: mu_.
  void MoveStragglers(uint64_t lo);
  // Updates the longest and the shortest recent round trip with an ack's.
  // REQUIRES: mu_.
  void NoteRtt(const RttSamples& sample, Clock::time_point now);
  // How much a round trip of `rtt_ms` exceeds the shortest recent one
  // (us): queueing that no stage measured. REQUIRES: mu_.
  double ExcessRttUs(double rtt_ms) const;
  // Flow control and D-SACK on an ack that released `released` entries;
  // `shortest` is its shortest first-transmission round trip, if any.
  void Adapt(const AckMessage& ack, size_t released,
             std::optional<Clock::duration> shortest,
             Clock::time_point now);    // REQUIRES: mu_.

  const size_t capacity_;
  const RetransmitOptions options_;
  mutable std::mutex mu_;
  std::condition_variable acked_;
  // Seq s lives at ring_[s % capacity_] while ring_lo_ <= s < next_
  // (next_ - ring_lo_ <= capacity_), in stragglers_ while base_ <= s <
  // ring_lo_ (only outstanding ones).
  std::vector<Entry> ring_;                      // Guarded by mu_.
  std::map<uint64_t, Entry> stragglers_;         // Guarded by mu_.
  uint64_t ring_lo_ = 0;                         // Guarded by mu_.
  const uint64_t span_;  // Most seqs from base_ to next_.
  Entry end_;                                    // Guarded by mu_.
  uint64_t end_count_ = 0;  // The end-of-stream's count. Guarded by mu_.
  // Why the failed items among the outstanding ones failed, by seq.
  std::unordered_map<uint64_t, std::shared_ptr<const ItemFailure>>
      failures_;                                 // Guarded by mu_.
  std::string stream_;      // Of the items added. Guarded by mu_.
  uint64_t base_ = 0;  // Lowest unacknowledged seq. Guarded by mu_.
  uint64_t next_ = 0;  // One past the highest seq added. Guarded by mu_.
  size_t data_entries_ = 0;                      // Guarded by mu_.
  size_t bytes_ = 0;  // Payload bytes outstanding. Guarded by mu_.
  // Transmissions in sending order (so sorted by time); stale ones (of
  // released or resent entries) are skipped lazily.
  std::deque<Sent> sent_;                        // Guarded by mu_.
  double srtt_ms_ = 0, rttvar_ms_ = 0;           // Guarded by mu_.
  // Each ack's shortest round trip, smoothed: it grows when every item
  // queues (a slow sink), not when a few are held back (retries).
  double floor_ms_ = 0;                          // Guarded by mu_.
  bool have_rtt_ = false;                        // Guarded by mu_.
  // Send time of the most recently sent entry acked.
  std::optional<Clock::time_point> latest_acked_sent_at_;  // Guarded by mu_.
  // Longest first-transmission round trip in the current and the previous
  // period (each max(1 s, 8 x srtt) long).
  Clock::duration rtt_max_now_{}, rtt_max_before_{};  // Guarded by mu_.
  Clock::time_point rtt_period_start_;           // Guarded by mu_.
  // Shortest first-transmission round trip in the current and the
  // previous period (each 10 s long).
  std::optional<Clock::duration> rtt_min_now_, rtt_min_before_;  // Guarded by mu_.
  Clock::time_point rtt_min_period_start_;       // Guarded by mu_.
  int overdue_factor_ = 2;                       // Guarded by mu_.
  Clock::time_point last_dsack_;                 // Guarded by mu_.
  uint64_t duplicates_reported_ = 0;             // Guarded by mu_.
  // Flow control (see above).
  const FlowOptions flow_;
  double limit_;                                 // Guarded by mu_.
  bool slow_start_ = true;                       // Guarded by mu_.
  double queued_us_ = 0, op_us_ = 0;             // Smoothed. Guarded by mu_.
  bool have_timing_ = false;                     // Guarded by mu_.
  double rate_ = 0;  // Items acked per second, smoothed. Guarded by mu_.
  // Time between acks that release something, smoothed (us), and when the
  // last one came, and whether items were still outstanding after it.
  double ack_gap_us_ = 0;                        // Guarded by mu_.
  std::optional<Clock::time_point> last_release_at_;  // Guarded by mu_.
  bool had_outstanding_ = false;                 // Guarded by mu_.
  Clock::time_point round_start_;                // Guarded by mu_.
  uint64_t round_released_ = 0;                  // Guarded by mu_.
  int backoff_ = 0;                              // Guarded by mu_.
  Clock::time_point last_progress_;              // Guarded by mu_.
  uint64_t retransmits_ = 0;                     // Guarded by mu_.
};

}  // namespace sluice

#endif  // SLUICE_PRODUCER_INFLIGHT_WINDOW_H_
