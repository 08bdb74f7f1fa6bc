// sink/sink.h
//
// The sink: the end of the pipeline and the only judge of completion.
//
//   one thread owns PULL and the ack socket: it reads frames and takes
//   their items itself (per-stream trackers, duplicate detection, output,
//   reorder buffer, commits, acks), with no hand-off to another thread
//
// The caller's thread shows live progress and waits. The run ends when
// --streams K streams are complete (OK), when no frame arrived for
// --idle-timeout with work incomplete (kIncomplete), or on a stop request
// (kCancelled). In every case the report is written and the output flushed.
// A run whose streams completed with failed items, or with errors (items
// beyond a stream's count, conflicting end-of-stream counts), ends
// kDataError (exit 65); one that ends with a stream incomplete never ends OK.
//
// Durability: an item is acknowledged only after a commit: the output and
// dead-letter bytes handed to the operating system (and to the disk with
// --durability fsync), then a record of what was taken appended to the state
// file, the items held by the reorder buffer included. A sink started again
// with the same flags recovers from that file, cuts the output back to the
// last commit and goes on; producers replay what was not acknowledged.
#ifndef SLUICE_SINK_SINK_H_
#define SLUICE_SINK_SINK_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/endpoint.h"
#include "common/flags.h"
#include "common/frame_io.h"
#include "common/status.h"
#include "common/stop_signal.h"
#include "sink/ack_publisher.h"
#include "sink/output_writer.h"
#include "sink/state_file.h"

namespace sluice {

struct SinkOptions {
  std::vector<Endpoint> in;
  uint64_t streams = 1;           // Complete streams to wait for; 0 = forever.
  std::string output;             // Empty: no output file.
  std::string dead_letter;        // Failed items' file; empty: none.
  bool ordered = false;
  size_t reorder_capacity = 100000;  // Items buffered per stream, --ordered.
  OutputFormat output_format = OutputFormat::kLines;
  // The state file (see sink/state_file.h); empty: none, so a restarted
  // sink starts from nothing (and refuses to overwrite a non-empty output).
  std::string state;
  Durability durability = Durability::kProcess;
  // Start anew: cut --output, --dead-letter and --state to nothing.
  bool fresh = false;
  // Per stream, how far above its lowest missing seq an item may be.
  uint64_t seen_window = uint64_t{1} << 22;
  // Most time between commits of the state while items come in.
  std::chrono::milliseconds commit_interval{20};
  std::string report;             // Empty: no report file.
  std::optional<std::chrono::milliseconds> idle_timeout;
  size_t max_streams = 1024;      // Streams tracked at once.
  bool progress = false;          // Live progress on `progress_out`.
  double max_rate = 0;            // Items/s taken at most; 0 = unlimited.
  std::vector<Endpoint> acks;     // Where to publish acks; empty = off.
  AckOptions ack;
  // Before exiting, how long to wait for the ack subscribers of complete
  // streams that have not subscribed yet.
  std::chrono::milliseconds ack_wait{2000};
  CommonFlags flags;
};

struct SinkCounters {
  ReceiveCounters receive;
  Counter items_new;          // First arrival of a (stream, seq).
  Counter duplicates;         // Later arrivals of one; not written.
  Counter out_of_range;       // seq >= the stream's count; not written.
  Counter beyond_window;      // seq too far ahead of the stream's gap.
  Counter refused_newline;    // Payloads holding a newline (lines format).
  Counter commits;            // Records appended to the state file.
  Counter failed;             // New items an op gave up on (dead letters).
  Counter dropped;            // New items an op dropped.
  Counter too_many_streams;   // Items of streams beyond --max-streams.
  Counter written;            // Lines written to --output.
  Counter reorder_items;      // Gauge: items held back for --ordered.
  Counter curve_refused;      // CURVE clients refused (not in --curve-allow).
  Counter handshake_failed;  // Handshakes that failed (see the log for why).
  AckCounters acks;           // Ack frames, hellos, subscriptions.
  nlohmann::json ToJson() const;
};

struct SinkOutcome {
  nlohmann::json report;  // The report (docs/design.md fields), also on disk.
  std::string summary;    // A few human lines.
};

// Runs the sink. Prints "READY in=<addresses> [acks=<addresses>]" on
// `ready_out` once bound,
// progress on `progress_out` if options.progress. Fills `outcome` in every
// case where the socket could be opened.
Status RunSink(const SinkOptions& options, StopSignal& stop,
               SinkCounters& counters, std::ostream& ready_out,
               std::ostream& progress_out, SinkOutcome& outcome);

}  // namespace sluice

#endif  // SLUICE_SINK_SINK_H_
