// libFuzzer target for the wire decoders: whatever bytes arrive, DecodeFrame
// and DecodeAck return a verdict without crashing, leaking or reading out of
// bounds; what they accept survives a re-encode unchanged; and DecodeFrame,
// which reads the wire format directly, agrees with protobuf's generated
// parser on every input: the same verdict and the same items.
//
// Built with clang (-fsanitize=fuzzer,address,undefined) by `make fuzz`;
// `make test` runs it briefly on the seeds in tests/fuzz/seeds.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/envelope_codec.h"
#include "proto/sluice.pb.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();  // A finding: libFuzzer saves the input.
}

// The frame rules written over the generated classes: what DecodeFrame must
// agree with. Returns whether the frame is accepted, with its items.
bool ReferenceAccepts(const uint8_t* data, size_t size, size_t limit,
                      std::vector<sluice::Item>& out) {
  using namespace sluice;
  if (size > limit) return false;
  wire::Envelope e;
  if (!e.ParseFromArray(data, static_cast<int>(size))) return false;
  if (!e.has_version() || e.version() < 1 || e.version() > 3) return false;
  auto valid_id = [](const std::string& id) {
    return !id.empty() && id.size() <= kMaxStreamIdBytes;
  };
  if (e.has_end_of_stream()) {
    const wire::EndOfStream& end = e.end_of_stream();
    if (!valid_id(end.stream()) || !end.has_count() || end.count() > kMaxStreamCount) {
      return false;
    }
    out.push_back(Item::EndOfStream(end.stream(), end.count()));
    return true;
  }
  if (!e.has_batch() || e.batch().items_size() == 0) return false;
  for (const wire::Item& w : e.batch().items()) {
    Item& item = out.emplace_back();
    item.stream = w.stream().empty() ? e.batch().stream() : w.stream();
    if (!valid_id(item.stream) || !w.has_seq() || w.seq() >= kMaxStreamCount) {
      return false;
    }
    item.seq = w.seq();
    item.payload = w.payload();
    item.produced_at_us = w.produced_at_us();
    item.more_payloads.assign(w.more_payloads().begin(), w.more_payloads().end());
    item.dropped = w.dropped();
    item.queued_us = static_cast<uint32_t>(std::min<uint64_t>(w.queued_us(), UINT32_MAX));
    item.op_us = static_cast<uint32_t>(std::min<uint64_t>(w.op_us(), UINT32_MAX));
    if (w.has_failure()) {
      item.failure = std::make_shared<ItemFailure>(ItemFailure{
          w.failure().op(), w.failure().reason(), w.failure().detail(),
          w.failure().worker(), w.failure().attempts()});
    }
  }
  return true;
}

bool SameItem(const sluice::Item& a, const sluice::Item& b) {
  if (a.stream != b.stream || a.end_of_stream != b.end_of_stream ||
      a.seq != b.seq || a.count != b.count || a.payload != b.payload ||
      a.produced_at_us != b.produced_at_us || a.more_payloads != b.more_payloads ||
      a.dropped != b.dropped || a.failed() != b.failed() ||
      a.queued_us != b.queued_us || a.op_us != b.op_us) {
    return false;
  }
  if (!a.failed()) return true;
  return a.failure->op == b.failure->op && a.failure->reason == b.failure->reason &&
         a.failure->detail == b.failure->detail &&
         a.failure->worker == b.failure->worker &&
         a.failure->attempts == b.failure->attempts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice;
  constexpr size_t kLimit = 1 << 16;

  std::vector<Item> items;
  const bool accepted = !DecodeFrame(data, size, kLimit, items);
  std::vector<Item> reference;
  Check(accepted == ReferenceAccepts(data, size, kLimit, reference));
  if (accepted) {
    Check(items.size() == reference.size());
    for (size_t i = 0; i < items.size(); ++i) Check(SameItem(items[i], reference[i]));
  }
  if (accepted) {
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
    for (size_t i = 0; i < items.size(); ++i) Check(SameItem(again[i], items[i]));
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
