// libFuzzer target for the wire decoders: whatever bytes arrive, DecodeFrame
// and DecodeAck return a verdict without crashing, leaking or reading out of
// bounds, and what they accept survives a re-encode unchanged.
//
// Built with clang (-fsanitize=fuzzer,address,undefined) by `make fuzz`;
// `make test` runs it briefly on the seeds in tests/fuzz/seeds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/envelope_codec.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();  // A finding: libFuzzer saves the input.
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice;
  constexpr size_t kLimit = 1 << 16;

  std::vector<Item> items;
  if (!DecodeFrame(data, size, kLimit, items)) {
    Check(!items.empty());
    Check(size <= kLimit);
    FrameEncoder encoder;
    std::vector<Item> again;
    std::vector<Item> copy = items;
    zmq::message_t frame = items.back().end_of_stream
                               ? encoder.EncodeEndOfStream(items.back())
                               : encoder.EncodeBatch(copy);
    Check(!DecodeFrame(frame.data(), frame.size(), SIZE_MAX, again));
    Check(again.size() == items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      Check(again[i].stream == items[i].stream);
      Check(again[i].end_of_stream == items[i].end_of_stream);
      Check(again[i].seq == items[i].seq && again[i].count == items[i].count);
      Check(again[i].payload == items[i].payload);
    }
  } else {
    Check(items.empty());
  }

  AckMessage ack;
  if (!DecodeAck(data, size, kLimit, ack)) {
    for (const auto& [begin, end] : ack.ranges) {
      Check(begin < end && end <= kMaxStreamCount);
    }
    FrameEncoder encoder;
    zmq::message_t frame = encoder.EncodeAck(ack);
    std::string topic = AckTopic(ack.stream);
    Check(frame.size() >= topic.size() &&
          std::string_view(static_cast<const char*>(frame.data()), topic.size()) ==
              topic);
  }
  return 0;
}
