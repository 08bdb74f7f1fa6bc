// sink/output_writer.h
//
// Writes result payloads to --output, one line each, and with --ordered
// restores sequence order per stream through a bounded reorder buffer. An
// item with several outputs (fan-out) writes them together, in order; a
// dropped or failed item writes nothing but still takes its place in the
// order. Failed items go to the dead-letter file (--dead-letter), one JSON
// object per line:
//   {"stream":..., "seq":..., "op":..., "reason":..., "detail":...,
//    "worker":..., "attempts":..., "payload":...}
// with "payload_base64" instead of "payload" when the bytes are not UTF-8.
//
// The buffer holds at most `reorder_capacity` items per stream. When an item
// would overflow it, the lowest buffered item is written out early (skipping
// the gap below it) rather than blocking the pipeline or dropping anything;
// an item below what was already written is written at once. Either makes the
// output out of order, which output_in_order() then reports.
//
// Thread safety: none; owned by the sink's accounting thread.
#ifndef SLUICE_SINK_OUTPUT_WRITER_H_
#define SLUICE_SINK_OUTPUT_WRITER_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/item.h"
#include "common/status.h"

namespace sluice {

class OutputWriter {
 public:
  // `path` empty: write nothing (but still account).
  // `dead_letter` empty: failed items are only counted.
  static StatusOr<std::unique_ptr<OutputWriter>> Open(
      const std::string& path, bool ordered, size_t reorder_capacity,
      const std::string& dead_letter = "");
  ~OutputWriter();
  OutputWriter(const OutputWriter&) = delete;
  OutputWriter& operator=(const OutputWriter&) = delete;

  // Takes a new (never a duplicate) item: its outputs, or none if it was
  // dropped or failed (a failed one also goes to the dead-letter file).
  Status Write(Item item);
  // Shorthand for an item with one output.
  Status Write(const std::string& stream, uint64_t seq, std::string payload);
  // Writes whatever a stream still buffers, in order (called when a stream
  // completes or the sink stops) and flushes the file.
  Status FlushStream(const std::string& stream);
  Status FlushAll();
  // Hands what is written so far to the operating system (fflush), the
  // dead letters included.
  Status FlushFile();

  uint64_t written() const { return written_; }
  uint64_t dead_letters() const { return dead_letters_; }
  uint64_t buffered() const { return buffered_; }
  bool output_in_order() const { return in_order_; }

 private:
  OutputWriter(std::FILE* file, std::FILE* dead, bool ordered, size_t capacity)
      : file_(file), dead_(dead), ordered_(ordered), capacity_(capacity) {}
  struct Pending {
    uint64_t next = 0;               // Next seq to write.
    std::map<uint64_t, Item> items;  // Buffered, all >= next.
  };
  Status Line(const std::string& payload);
  Status Lines(const Item& item);  // Every output of `item`.
  Status Drain(Pending& pending);
  Status DeadLetter(const Item& item);

  std::FILE* file_;
  std::FILE* dead_;
  const bool ordered_;
  const size_t capacity_;
  std::unordered_map<std::string, Pending> streams_;
  uint64_t written_ = 0;
  uint64_t dead_letters_ = 0;
  uint64_t buffered_ = 0;
  bool in_order_ = true;
};

}  // namespace sluice

#endif  // SLUICE_SINK_OUTPUT_WRITER_H_
