#include "common/envelope_codec.h"

#include <utility>

namespace sluice {
namespace {

bool ValidStreamId(const std::string& stream) {
  return !stream.empty() && stream.size() <= kMaxStreamIdBytes;
}

}  // namespace

std::string_view RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kParseError:
      return "parse_error";
    case RejectReason::kBadVersion:
      return "bad_version";
    case RejectReason::kMissingField:
      return "missing_field";
    case RejectReason::kEmptyBatch:
      return "empty_batch";
    case RejectReason::kBadStreamId:
      return "bad_stream_id";
    case RejectReason::kBadCount:
      return "bad_count";
    case RejectReason::kWrongKind:
      return "wrong_kind";
    case RejectReason::kBadAckRange:
      return "bad_ack_range";
  }
  return "unknown";
}

namespace {

// Size, parse and version checks shared by every decoder; `envelope` is a
// thread-local message reused between calls.
std::optional<RejectReason> ParseEnvelope(const void* data, size_t size,
                                          size_t max_frame_bytes,
                                          wire::Envelope& envelope) {
  if (size > max_frame_bytes) return RejectReason::kTooLarge;
  envelope.Clear();
  if (size > static_cast<size_t>(INT32_MAX) ||
      !envelope.ParseFromArray(data, static_cast<int>(size))) {
    return RejectReason::kParseError;
  }
  if (!envelope.has_version()) return RejectReason::kMissingField;
  if (envelope.version() != kWireVersion &&
      envelope.version() != kWireVersionOutcomes) {
    return RejectReason::kBadVersion;
  }
  return std::nullopt;
}

}  // namespace

std::optional<RejectReason> DecodeFrame(const void* data, size_t size,
                                        size_t max_frame_bytes,
                                        std::vector<Item>& out) {
  thread_local wire::Envelope envelope;
  if (auto reject = ParseEnvelope(data, size, max_frame_bytes, envelope)) {
    return reject;
  }
  switch (envelope.body_case()) {
    case wire::Envelope::kBatch: {
      auto* items = envelope.mutable_batch()->mutable_items();
      if (items->empty()) return RejectReason::kEmptyBatch;
      for (const wire::Item& item : *items) {
        if (!ValidStreamId(item.stream())) return RejectReason::kBadStreamId;
        if (!item.has_seq()) return RejectReason::kMissingField;
        if (item.seq() >= kMaxStreamCount) return RejectReason::kBadCount;
      }
      out.reserve(out.size() + items->size());
      for (wire::Item& wire_item : *items) {
        Item& item = out.emplace_back();
        item.stream = std::move(*wire_item.mutable_stream());
        item.seq = wire_item.seq();
        item.payload = std::move(*wire_item.mutable_payload());
        item.produced_at_us = wire_item.produced_at_us();
        if (wire_item.more_payloads_size() > 0) {
          item.more_payloads.reserve(wire_item.more_payloads_size());
          for (std::string& more : *wire_item.mutable_more_payloads()) {
            item.more_payloads.push_back(std::move(more));
          }
        }
        item.dropped = wire_item.dropped();
        if (wire_item.has_failure()) {
          wire::ItemFailure* f = wire_item.mutable_failure();
          auto failure = std::make_shared<ItemFailure>();
          failure->op = std::move(*f->mutable_op());
          failure->reason = std::move(*f->mutable_reason());
          failure->detail = std::move(*f->mutable_detail());
          failure->worker = std::move(*f->mutable_worker());
          failure->attempts = f->attempts();
          item.failure = std::move(failure);
        }
      }
      return std::nullopt;
    }
    case wire::Envelope::kEndOfStream: {
      wire::EndOfStream* end = envelope.mutable_end_of_stream();
      if (!ValidStreamId(end->stream())) return RejectReason::kBadStreamId;
      if (!end->has_count()) return RejectReason::kMissingField;
      if (end->count() > kMaxStreamCount) return RejectReason::kBadCount;
      out.push_back(
          Item::EndOfStream(std::move(*end->mutable_stream()), end->count()));
      return std::nullopt;
    }
    case wire::Envelope::kAck:
      return RejectReason::kWrongKind;
    case wire::Envelope::BODY_NOT_SET:
      break;
  }
  return RejectReason::kMissingField;
}

std::optional<RejectReason> DecodeAck(const void* data, size_t size,
                                      size_t max_frame_bytes, AckMessage& out) {
  thread_local wire::Envelope envelope;
  if (auto reject = ParseEnvelope(data, size, max_frame_bytes, envelope)) {
    return reject;
  }
  if (envelope.body_case() == wire::Envelope::BODY_NOT_SET) {
    return RejectReason::kMissingField;
  }
  if (envelope.body_case() != wire::Envelope::kAck) {
    return RejectReason::kWrongKind;
  }
  if (!ValidStreamId(envelope.ack_stream())) return RejectReason::kBadStreamId;
  const wire::Ack& ack = envelope.ack();
  if (ack.ranges_size() % 2 != 0) return RejectReason::kBadAckRange;
  for (int i = 0; i < ack.ranges_size(); i += 2) {
    if (ack.ranges(i) >= ack.ranges(i + 1) ||
        ack.ranges(i + 1) > kMaxStreamCount) {
      return RejectReason::kBadAckRange;
    }
  }
  out.stream = std::move(*envelope.mutable_ack_stream());
  out.ranges.clear();
  for (int i = 0; i < ack.ranges_size(); i += 2) {
    out.ranges.emplace_back(ack.ranges(i), ack.ranges(i + 1));
  }
  out.end_of_stream = ack.end_of_stream();
  out.complete = ack.complete();
  out.hello_epoch = ack.hello_epoch();
  switch (ack.answer()) {
    case wire::WELCOME:
      out.answer = HelloAnswer::kWelcome;
      break;
    case wire::REJECTED:
      out.answer = HelloAnswer::kRejected;
      break;
    default:
      out.answer = HelloAnswer::kNone;  // Unknown answers mean nothing.
      break;
  }
  return std::nullopt;
}

std::string AckTopic(std::string_view stream) {
  // Field 1 (version, varint) = kWireVersion, then field 4 (ack_stream,
  // length-delimited): tag 0x22, a one-byte length (ids are <= 64 bytes).
  static_assert(kWireVersion < 128 && kMaxStreamIdBytes < 128);
  std::string topic = {'\x08', static_cast<char>(kWireVersion), '\x22',
                       static_cast<char>(stream.size())};
  topic.append(stream);
  return topic;
}

namespace {
constexpr std::string_view kHelloPrefix("\0sluice-hello", 13);
}  // namespace

std::string HelloTopic(std::string_view stream, uint64_t epoch) {
  std::string topic(kHelloPrefix);
  for (int shift = 56; shift >= 0; shift -= 8) {
    topic += static_cast<char>((epoch >> shift) & 0xff);
  }
  topic.append(stream);
  return topic;
}

std::optional<std::pair<std::string, uint64_t>> ParseHelloTopic(
    std::string_view topic) {
  if (topic.size() < kHelloPrefix.size() + 8 + 1 ||
      topic.substr(0, kHelloPrefix.size()) != kHelloPrefix) {
    return std::nullopt;
  }
  uint64_t epoch = 0;
  for (size_t i = 0; i < 8; ++i) {
    epoch = (epoch << 8) | static_cast<uint8_t>(topic[kHelloPrefix.size() + i]);
  }
  std::string stream(topic.substr(kHelloPrefix.size() + 8));
  if (epoch == 0 || !ValidStreamId(stream)) return std::nullopt;
  return std::make_pair(std::move(stream), epoch);
}

std::optional<std::string> ParseAckTopic(std::string_view topic) {
  if (topic.size() < 5) return std::nullopt;
  std::string stream(topic.substr(4));
  if (AckTopic(stream) != topic || !ValidStreamId(stream)) return std::nullopt;
  return stream;
}

zmq::message_t FrameEncoder::EncodeBatch(std::span<Item> items) {
  // Envelope::Clear() would delete the batch (a oneof member) and with it
  // every wire::Item; clearing only the repeated field keeps them for reuse,
  // so steady-state encoding allocates no Items.
  if (envelope_.body_case() != wire::Envelope::kBatch) envelope_.Clear();
  envelope_.clear_ack_stream();
  uint32_t version = kWireVersion;
  auto* wire_items = envelope_.mutable_batch()->mutable_items();
  wire_items->Clear();
  wire_items->Reserve(static_cast<int>(items.size()));
  for (Item& item : items) {
    wire::Item* wire_item = wire_items->Add();
    wire_item->set_stream(std::move(item.stream));
    wire_item->set_seq(item.seq);
    wire_item->set_payload(std::move(item.payload));
    wire_item->set_produced_at_us(item.produced_at_us);
    // Reused wire::Items keep their old contents: reset what may be set.
    wire_item->clear_more_payloads();
    wire_item->clear_dropped();
    wire_item->clear_failure();
    if (!item.more_payloads.empty() || item.dropped || item.failure) {
      version = kWireVersionOutcomes;
      for (std::string& more : item.more_payloads) {
        wire_item->add_more_payloads(std::move(more));
      }
      wire_item->set_dropped(item.dropped);
      if (item.failure) {
        wire::ItemFailure* f = wire_item->mutable_failure();
        f->set_op(item.failure->op);
        f->set_reason(item.failure->reason);
        f->set_detail(item.failure->detail);
        f->set_worker(item.failure->worker);
        f->set_attempts(item.failure->attempts);
      }
    }
  }
  envelope_.set_version(version);
  return Serialize();
}

zmq::message_t FrameEncoder::EncodeEndOfStream(const Item& end) {
  envelope_.Clear();
  envelope_.set_version(kWireVersion);
  envelope_.mutable_end_of_stream()->set_stream(end.stream);
  envelope_.mutable_end_of_stream()->set_count(end.count);
  return Serialize();
}

zmq::message_t FrameEncoder::EncodeAck(const AckMessage& ack) {
  envelope_.Clear();
  envelope_.set_version(kWireVersion);
  envelope_.set_ack_stream(ack.stream);
  wire::Ack* body = envelope_.mutable_ack();
  body->mutable_ranges()->Reserve(static_cast<int>(ack.ranges.size() * 2));
  for (const auto& [begin, end] : ack.ranges) {
    body->add_ranges(begin);
    body->add_ranges(end);
  }
  body->set_end_of_stream(ack.end_of_stream);
  body->set_complete(ack.complete);
  body->set_hello_epoch(ack.hello_epoch);
  body->set_answer(static_cast<wire::HelloAnswer>(ack.answer));
  return Serialize();
}

zmq::message_t FrameEncoder::Serialize() {
  zmq::message_t frame(envelope_.ByteSizeLong());
  envelope_.SerializeWithCachedSizesToArray(
      static_cast<uint8_t*>(frame.data()));
  return frame;
}

}  // namespace sluice
