// common/item.h
//
// Item: the in-process form of what travels the pipeline, passed by value
// (moved) through bounded queues. A data item or, with end_of_stream set, the
// end-of-stream marker of its stream, which travels the same queues so that a
// stage passes it on like any other message.
#ifndef SLUICE_COMMON_ITEM_H_
#define SLUICE_COMMON_ITEM_H_

#include <cstdint>
#include <string>

namespace sluice {

struct Item {
  std::string stream;          // Stream id, 1..kMaxStreamIdBytes bytes.
  uint64_t seq = 0;            // Data: position in the stream. EOS: unused.
  std::string payload;         // Data: the content. EOS: empty.
  int64_t produced_at_us = 0;  // Data: producer's clock, 0 = unknown.
  bool end_of_stream = false;  // True: this is the stream's end marker.
  uint64_t count = 0;          // EOS: number of items in the stream.

  static Item EndOfStream(std::string stream, uint64_t count) {
    Item item;
    item.stream = std::move(stream);
    item.end_of_stream = true;
    item.count = count;
    return item;
  }
};

}  // namespace sluice

#endif  // SLUICE_COMMON_ITEM_H_
