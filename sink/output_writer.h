// sink/output_writer.h
//
// Writes result payloads to --output and with --ordered restores sequence
// order per stream through a bounded reorder buffer. An item with several
// outputs (fan-out) writes them together, in order; a dropped or failed item
// writes nothing but still takes its place in the order. Failed items go to
// the dead-letter file (--dead-letter), one JSON object per line:
//   {"stream":..., "seq":..., "op":..., "reason":..., "detail":...,
//    "worker":..., "attempts":..., "payload":...}
// with "payload_base64" instead of "payload" when the bytes are not UTF-8.
//
// Output formats (--output-format):
//   lines  each output and a newline. The caller must not pass a payload
//          holding a newline (the sink fails such an item instead).
//   jsonl  {"stream":..., "seq":..., "payload":...} per output, with
//          "payload_base64" when not UTF-8 and "part" (0, 1, ...) for the
//          outputs of a fanned-out item.
//   lp     each output as a 4-byte big-endian length and the bytes.
//
// Files: Open() takes an exclusive lock on each file (a second sink on the
// same file is refused, naming the holder's pid) and neither truncates nor
// writes; Start() then cuts each file to the length the caller says is
// committed (0 for a fresh start) and appends from there. Bytes written
// reach the operating system on Flush(); Sync() also makes them durable.
//
// The buffer holds at most `reorder_capacity` items per stream. When an item
// would overflow it, the lowest buffered item is written out early (skipping
// the gap below it) rather than blocking the pipeline or dropping anything;
// an item below what was already written is written at once. Either makes the
// output out of order, which output_in_order() then reports.
//
// Thread safety: none; owned by the sink's thread.
#ifndef SLUICE_SINK_OUTPUT_WRITER_H_
#define SLUICE_SINK_OUTPUT_WRITER_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/item.h"
#include "common/status.h"
#include "common/text.h"

namespace sluice {

enum class OutputFormat { kLines, kJsonl, kLengthPrefixed };
std::string_view OutputFormatName(OutputFormat format);
std::optional<OutputFormat> ParseOutputFormat(std::string_view name);

struct OutputOptions {
  std::string path;         // Empty: write nothing (but still account).
  std::string dead_letter;  // Empty: failed items are only counted.
  bool ordered = false;
  size_t reorder_capacity = 100000;
  OutputFormat format = OutputFormat::kLines;
};

class OutputWriter {
 public:
  // Opens and locks the files; writes nothing. kUnavailable if another
  // process holds a lock, kInvalidArgument if a file cannot be opened.
  static StatusOr<std::unique_ptr<OutputWriter>> Open(const OutputOptions& options);
  // Shorthand used by tests: open, then Start(0, 0).
  static StatusOr<std::unique_ptr<OutputWriter>> Open(
      const std::string& path, bool ordered, size_t reorder_capacity,
      const std::string& dead_letter = "");
  ~OutputWriter();
  OutputWriter(const OutputWriter&) = delete;
  OutputWriter& operator=(const OutputWriter&) = delete;

  // Lengths of the files when opened (0 for a file that did not exist).
  uint64_t existing_output_bytes() const { return existing_output_; }
  uint64_t existing_dead_letter_bytes() const { return existing_dead_; }
  // Cuts the files to these lengths and appends from there. kDataError if a
  // file is shorter than that (it was changed behind the sink's back).
  Status Start(uint64_t output_bytes, uint64_t dead_letter_bytes);

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
  // After FlushFile(): waits until the operating system has the bytes on
  // disk (fdatasync), for --durability fsync.
  Status Sync();

  // Bytes handed to the files so far (after Start(), counting from 0).
  uint64_t output_bytes() const { return output_bytes_; }
  uint64_t dead_letter_bytes() const { return dead_bytes_; }
  uint64_t written() const { return written_; }
  uint64_t dead_letters() const { return dead_letters_; }
  uint64_t buffered() const { return buffered_; }
  bool output_in_order() const { return in_order_; }
  void RestoreCounts(uint64_t written, uint64_t dead_letters, bool in_order) {
    written_ = written;
    dead_letters_ = dead_letters;
    in_order_ = in_order;
  }

  // --ordered, for the sink's state file: the next seq a stream waits for,
  // and the items it holds (each as its outputs; none for a failed or
  // dropped one). TakeNewlyHeld() returns the items held since its last call
  // that are still held; ForEachHeld() visits every held item.
  uint64_t WriteNext(const std::string& stream) const;
  using HeldVisitor = std::function<void(
      const std::string& stream, uint64_t seq, const Item& item)>;
  void TakeNewlyHeld(const HeldVisitor& visit);
  void ForEachHeld(const HeldVisitor& visit) const;
  void RestoreNext(const std::string& stream, uint64_t next);
  void RestoreHeld(const std::string& stream, Item item);

 private:
  OutputWriter(const OutputOptions& options) : options_(options) {}
  struct Pending {
    uint64_t next = 0;               // Next seq to write.
    std::map<uint64_t, Item> items;  // Buffered, all >= next.
  };
  Status Output(const Item& item, size_t part, const std::string& payload);
  Status Lines(const Item& item);  // Every output of `item`.
  Status Drain(Pending& pending);
  Status DeadLetter(const Item& item);
  Status Put(std::FILE* file, const std::string& bytes, uint64_t& counter,
             const char* flag);

  const OutputOptions options_;
  int output_fd_ = -1;
  int dead_fd_ = -1;
  std::FILE* file_ = nullptr;
  std::FILE* dead_ = nullptr;
  uint64_t existing_output_ = 0;
  uint64_t existing_dead_ = 0;
  std::string scratch_;
  std::unordered_map<std::string, Pending> streams_;
  std::vector<std::pair<std::string, uint64_t>> newly_held_;
  uint64_t output_bytes_ = 0;
  uint64_t dead_bytes_ = 0;
  uint64_t written_ = 0;
  uint64_t dead_letters_ = 0;
  uint64_t buffered_ = 0;
  bool in_order_ = true;
};

// Opens `path` for reading and writing (creating it, mode 0644), without
// truncating, and takes an exclusive lock on it. `flag` names it in errors.
// kUnavailable if another process holds the lock (naming its pid).
StatusOr<int> OpenLocked(const std::string& path, const char* flag);

}  // namespace sluice

#endif  // SLUICE_SINK_OUTPUT_WRITER_H_
