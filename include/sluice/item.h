// include/sluice/item.h
//
// Item: one unit of work as it travels the pipeline and as an op sees it.
// Items are moved, never copied, between the threads of a process.
//
// What an op may do with the item it is given:
//   - rewrite `payload` in place (the common case: no copy, no allocation
//     beyond what the new payload needs);
//   - emit several outputs: AddOutput() appends further payloads. They keep
//     the item's identity (stream, seq) and travel as one item, so that a
//     replay after a fault can never write half of them twice;
//   - drop it: Drop(). A dropped item still reaches the sink, which counts it
//     as done (`dropped` in the report) and writes nothing for it;
//   - fail it: return a non-OK Status from the op (see sluice/op.h). The
//     runtime retries it and, after the retries, marks it failed; it then
//     travels on unchanged to the sink's dead-letter file.
// Ops never see end-of-stream markers or items that already failed.
//
// Thread safety: a value type; one thread owns an item at a time.
#ifndef SLUICE_ITEM_H_
#define SLUICE_ITEM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sluice {

// Why an item failed, as carried to the sink and its dead-letter file.
struct ItemFailure {
  std::string op;      // The op that gave up on it ("exec").
  std::string reason;  // A short lower_snake code ("timeout"), for counting.
  std::string detail;  // The whole message, for people.
  std::string worker;  // Which worker: "HOST:PID/OP#THREAD".
  uint32_t attempts = 0;
};

struct Item {
  std::string stream;          // Stream id, 1..64 bytes.
  uint64_t seq = 0;            // Position in the stream (data items).
  std::string payload;         // The content; the first output of an op.
  int64_t produced_at_us = 0;  // Producer's clock, 0 = unknown.
  // Set by the runtime, not by ops: microseconds this item waited for a
  // slow op's thread or slot, and spent in such ops, summed over the stages
  // it passed (saturating). Carried to the sink for the producer's flow
  // control; 0 where not measured.
  uint32_t queued_us = 0;
  uint32_t op_us = 0;
  // Outputs after the first, when an op emitted several (fan-out).
  std::vector<std::string> more_payloads;
  // Set once an op gave up on the item; shared so that Item stays cheap to
  // move and copyable (the producer keeps copies for replay).
  std::shared_ptr<const ItemFailure> failure;
  uint64_t count = 0;          // End-of-stream: number of items.
  bool dropped = false;        // An op dropped it: done, nothing to write.
  bool end_of_stream = false;  // True: this is the stream's end marker.
  // (The two flags last: no padding between fields, 144 bytes in all.)

  // Appends one more output of this item (fan-out).
  void AddOutput(std::string output) {
    more_payloads.push_back(std::move(output));
  }
  // Drops the item: it completes with no output.
  void Drop() {
    dropped = true;
    payload.clear();
    more_payloads.clear();
  }
  bool failed() const { return failure != nullptr; }
  // How many outputs the sink will write for it.
  size_t output_count() const {
    return dropped || failure ? 0 : 1 + more_payloads.size();
  }

  static Item EndOfStream(std::string stream, uint64_t count) {
    Item item;
    item.stream = std::move(stream);
    item.end_of_stream = true;
    item.count = count;
    return item;
  }
};

}  // namespace sluice

#endif  // SLUICE_ITEM_H_
