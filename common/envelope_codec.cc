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
  }
  return "unknown";
}

std::optional<RejectReason> DecodeFrame(const void* data, size_t size,
                                        size_t max_frame_bytes,
                                        std::vector<Item>& out) {
  if (size > max_frame_bytes) return RejectReason::kTooLarge;
  // Reused per thread: parsing into a cleared message keeps its allocations.
  thread_local wire::Envelope envelope;
  envelope.Clear();
  if (size > static_cast<size_t>(INT32_MAX) ||
      !envelope.ParseFromArray(data, static_cast<int>(size))) {
    return RejectReason::kParseError;
  }
  if (!envelope.has_version()) return RejectReason::kMissingField;
  if (envelope.version() != kWireVersion) return RejectReason::kBadVersion;

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
    case wire::Envelope::BODY_NOT_SET:
      break;
  }
  return RejectReason::kMissingField;
}

zmq::message_t FrameEncoder::EncodeBatch(std::span<Item> items) {
  envelope_.Clear();
  envelope_.set_version(kWireVersion);
  auto* wire_items = envelope_.mutable_batch()->mutable_items();
  wire_items->Reserve(static_cast<int>(items.size()));
  for (Item& item : items) {
    wire::Item* wire_item = wire_items->Add();
    wire_item->set_stream(std::move(item.stream));
    wire_item->set_seq(item.seq);
    wire_item->set_payload(std::move(item.payload));
    wire_item->set_produced_at_us(item.produced_at_us);
  }
  return Serialize();
}

zmq::message_t FrameEncoder::EncodeEndOfStream(const Item& end) {
  envelope_.Clear();
  envelope_.set_version(kWireVersion);
  envelope_.mutable_end_of_stream()->set_stream(end.stream);
  envelope_.mutable_end_of_stream()->set_count(end.count);
  return Serialize();
}

zmq::message_t FrameEncoder::Serialize() {
  zmq::message_t frame(envelope_.ByteSizeLong());
  envelope_.SerializeWithCachedSizesToArray(
      static_cast<uint8_t*>(frame.data()));
  return frame;
}

}  // namespace sluice
