#include "common/envelope_codec.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <google/protobuf/io/coded_stream.h>

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
      envelope.version() != kWireVersionOutcomes &&
      envelope.version() != kWireVersionBatchStream) {
    return RejectReason::kBadVersion;
  }
  return std::nullopt;
}

}  // namespace

namespace {

namespace pbio = google::protobuf::io;

constexpr uint32_t kVarint = 0;
constexpr uint32_t kLengthDelimited = 2;
constexpr uint32_t Tag(uint32_t field, uint32_t wire_type) {
  return (field << 3) | wire_type;
}

// Reads the protobuf wire format from a frame with two pointers: the next
// byte and the end of the message being read (an embedded message narrows
// the end while it is read). It accepts and refuses exactly what protobuf's
// own parser does for our messages (the fuzzer holds it to that), at a
// fraction of CodedInputStream's cost per field.
class WireReader {
 public:
  WireReader(const uint8_t* begin, const uint8_t* end) : p_(begin), end_(end) {}

  bool AtEnd() const { return p_ == end_; }
  size_t left() const { return static_cast<size_t>(end_ - p_); }

  // A varint of at most 10 bytes; bits past the 64th are dropped, as
  // protobuf does.
  bool Varint(uint64_t& out) {
    if (p_ != end_ && *p_ < 0x80) {
      out = *p_++;
      return true;
    }
    return VarintSlow(out, 10);
  }

  // The length of a length-delimited field as protobuf's parser reads it: a
  // varint of at most 5 bytes, below 2^31.
  bool Length(size_t& out) {
    uint64_t value = 0;
    if (p_ != end_ && *p_ < 0x80) {
      value = *p_++;
    } else if (!VarintSlow(value, 5)) {
      return false;
    }
    if (value > static_cast<uint64_t>(INT32_MAX)) return false;
    out = static_cast<size_t>(value);
    return true;
  }

  // The next tag: 0 at the end of the current message; false for a
  // malformed tag (more than 5 bytes, field number 0). A 5-byte tag keeps
  // its low 32 bits.
  bool NextTag(uint32_t& tag) {
    tag = 0;
    if (p_ == end_) return true;
    uint64_t value = 0;
    if (*p_ < 0x80) {
      value = *p_++;
    } else if (!VarintSlow(value, 5)) {
      return false;
    }
    tag = static_cast<uint32_t>(value);
    return (tag >> 3) != 0;
  }

  bool Skip(size_t n) {
    if (n > left()) return false;
    p_ += n;
    return true;
  }

  // A length-delimited field's bytes, as a view into the frame.
  bool View(std::string_view& out) {
    size_t length = 0;
    if (!Length(length) || length > left()) return false;
    out = std::string_view(reinterpret_cast<const char*>(p_), length);
    p_ += length;
    return true;
  }

  // Narrows the end to the embedded message that starts here (length
  // first); Leave() restores it once that message has been read.
  bool Enter(const uint8_t*& outer_end) {
    size_t length = 0;
    if (!Length(length) || length > left()) return false;
    outer_end = end_;
    end_ = p_ + length;
    return true;
  }
  void Leave(const uint8_t* outer_end) { end_ = outer_end; }

 private:
  bool VarintSlow(uint64_t& out, int max_bytes) {
    uint64_t value = 0;
    for (int i = 0; i < max_bytes; ++i) {
      if (p_ == end_) return false;
      const uint8_t byte = *p_++;
      value |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if (byte < 0x80) {
        out = value;
        return true;
      }
    }
    return false;
  }

  const uint8_t* p_;
  const uint8_t* end_;
};

// Reads a length-delimited field's bytes into `out` (reusing its capacity).
bool ReadInto(WireReader& in, std::string& out) {
  std::string_view view;
  if (!in.View(view)) return false;
  out.assign(view);
  return true;
}

// Skips the field that `tag` starts (groups included, nested up to a depth
// limit); false if it is malformed.
bool SkipField(WireReader& in, uint32_t tag, int depth = 0) {
  constexpr int kMaxGroupDepth = 100;  // Protobuf's recursion limit.
  switch (tag & 7) {
    case 0: {  // Varint.
      uint64_t value = 0;
      return in.Varint(value);
    }
    case 1:  // Fixed 64 bits.
      return in.Skip(8);
    case 2: {  // Length-delimited.
      size_t length = 0;
      return in.Length(length) && in.Skip(length);
    }
    case 3: {  // Start of a group: skip to its end.
      if (depth >= kMaxGroupDepth) return false;
      while (true) {
        uint32_t inner = 0;
        if (!in.NextTag(inner) || inner == 0) return false;
        if ((inner & 7) == 4) return (inner >> 3) == (tag >> 3);
        if (!SkipField(in, inner, depth + 1)) return false;
      }
    }
    case 5:  // Fixed 32 bits.
      return in.Skip(4);
    default:  // An end of group outside one, or no wire type at all.
      return false;
  }
}

// Runs `field(tag)` for each field of the embedded message that starts at
// the reader's position (length first). `field` returns false on a parse
// error and handles the tags it knows; others are skipped. A length past
// the end of the enclosing message is a parse error, as protobuf says.
template <typename Fn>
bool ReadMessage(WireReader& in, Fn&& field) {
  const uint8_t* outer_end = nullptr;
  if (!in.Enter(outer_end)) return false;
  while (true) {
    uint32_t tag = 0;
    if (!in.NextTag(tag)) return false;
    if (tag == 0) break;
    bool handled = false;
    if (!field(tag, handled)) return false;
    if (!handled && !SkipField(in, tag)) return false;
  }
  in.Leave(outer_end);
  return true;
}

bool ReadFailure(WireReader& in, ItemFailure& failure) {
  return ReadMessage(in, [&](uint32_t tag, bool& handled) {
    uint64_t value = 0;
    handled = true;
    switch (tag) {
      case Tag(1, kLengthDelimited):
        return ReadInto(in, failure.op);
      case Tag(2, kLengthDelimited):
        return ReadInto(in, failure.reason);
      case Tag(3, kLengthDelimited):
        return ReadInto(in, failure.detail);
      case Tag(4, kLengthDelimited):
        return ReadInto(in, failure.worker);
      case Tag(5, kVarint):
        if (!in.Varint(value)) return false;
        failure.attempts = static_cast<uint32_t>(value);
        return true;
    }
    handled = false;
    return true;
  });
}

uint32_t SaturatedMicros(uint64_t value) {
  return static_cast<uint32_t>(std::min<uint64_t>(value, UINT32_MAX));
}

bool ReadItem(WireReader& in, Item& item, bool& has_seq) {
  // (A shared_ptr, not an optional: constructing an optional of four
  // strings per item costs more than the rest of the item's decoding.)
  std::shared_ptr<ItemFailure> failure;
  bool ok = ReadMessage(in, [&](uint32_t tag, bool& handled) {
    std::string_view view;
    uint64_t value = 0;
    handled = true;
    switch (tag) {
      case Tag(1, kLengthDelimited):
        return ReadInto(in, item.stream);
      case Tag(2, kVarint):
        if (!in.Varint(value)) return false;
        item.seq = value;
        has_seq = true;
        return true;
      case Tag(3, kLengthDelimited):
        return ReadInto(in, item.payload);
      case Tag(4, kVarint):
        if (!in.Varint(value)) return false;
        item.produced_at_us = static_cast<int64_t>(value);
        return true;
      case Tag(5, kLengthDelimited):
        if (!in.View(view)) return false;
        item.more_payloads.emplace_back(view);
        return true;
      case Tag(6, kVarint):
        if (!in.Varint(value)) return false;
        item.dropped = value != 0;
        return true;
      case Tag(7, kLengthDelimited):
        if (!failure) failure = std::make_shared<ItemFailure>();
        return ReadFailure(in, *failure);
      case Tag(8, kVarint):
        if (!in.Varint(value)) return false;
        item.queued_us = SaturatedMicros(value);
        return true;
      case Tag(9, kVarint):
        if (!in.Varint(value)) return false;
        item.op_us = SaturatedMicros(value);
        return true;
    }
    handled = false;
    return true;
  });
  if (failure) item.failure = std::move(failure);
  return ok;
}

}  // namespace

std::optional<RejectReason> DecodeFrame(const void* data, size_t size,
                                        size_t max_frame_bytes, ItemRun& out) {
  if (size > max_frame_bytes) return RejectReason::kTooLarge;
  const size_t start = out.size();
  auto reject = [&](RejectReason reason) {
    out.Truncate(start);
    return reason;
  };
  if (size > static_cast<size_t>(INT32_MAX)) return reject(RejectReason::kParseError);
  const auto* bytes = static_cast<const uint8_t*>(data);
  WireReader in(bytes, bytes + size);
  // Per item of the frame: whether it had a seq (explicit presence).
  thread_local std::vector<uint8_t> has_seq;
  has_seq.clear();
  std::optional<uint32_t> version;
  // The body is a oneof: a later body field replaces an earlier one of
  // another kind; the same kind again merges, as protobuf does.
  wire::Envelope::BodyCase body = wire::Envelope::BODY_NOT_SET;
  std::string_view batch_stream, end_stream;
  uint64_t end_count = 0;
  bool has_end_count = false;
  thread_local wire::Ack ack;
  auto switch_body = [&](wire::Envelope::BodyCase to) {
    if (body == to) return;
    out.Truncate(start);
    has_seq.clear();
    batch_stream = end_stream = {};
    end_count = 0;
    has_end_count = false;
    ack.Clear();
    body = to;
  };
  while (true) {
    uint32_t tag = 0;
    if (!in.NextTag(tag)) return reject(RejectReason::kParseError);
    if (tag == 0) break;
    bool ok = true;
    switch (tag) {
      case Tag(1, kVarint): {
        uint64_t value = 0;
        ok = in.Varint(value);
        version = static_cast<uint32_t>(value);
        break;
      }
      case Tag(2, kLengthDelimited):
        switch_body(wire::Envelope::kBatch);
        ok = ReadMessage(in, [&](uint32_t t, bool& handled) {
          handled = true;
          if (t == Tag(1, kLengthDelimited)) {
            bool seq = false;
            bool read = ReadItem(in, out.Append(), seq);
            has_seq.push_back(seq);
            return read;
          }
          if (t == Tag(2, kLengthDelimited)) return in.View(batch_stream);
          handled = false;
          return true;
        });
        break;
      case Tag(3, kLengthDelimited):
        switch_body(wire::Envelope::kEndOfStream);
        ok = ReadMessage(in, [&](uint32_t t, bool& handled) {
          handled = true;
          if (t == Tag(1, kLengthDelimited)) return in.View(end_stream);
          if (t == Tag(2, kVarint)) {
            has_end_count = true;
            return in.Varint(end_count);
          }
          handled = false;
          return true;
        });
        break;
      case Tag(5, kLengthDelimited): {
        // An ack: the wrong kind here, but only if it parses at all.
        switch_body(wire::Envelope::kAck);
        // (Protobuf's own parser, not CodedInputStream's laxer one; a copy,
        // but acks never come this way in earnest.)
        std::string_view view;
        ok = in.View(view) && ack.MergeFromString(std::string(view));
        break;
      }
      default:
        ok = SkipField(in, tag);
        break;
    }
    if (!ok) return reject(RejectReason::kParseError);
  }
  if (!version) return reject(RejectReason::kMissingField);
  if (*version != kWireVersion && *version != kWireVersionOutcomes &&
      *version != kWireVersionBatchStream) {
    return reject(RejectReason::kBadVersion);
  }
  switch (body) {
    case wire::Envelope::kBatch: {
      if (out.size() == start) return reject(RejectReason::kEmptyBatch);
      for (size_t i = start; i < out.size(); ++i) {
        Item& item = out[i];
        if (item.stream.empty()) item.stream.assign(batch_stream);
        if (!ValidStreamId(item.stream)) return reject(RejectReason::kBadStreamId);
        if (!has_seq[i - start]) return reject(RejectReason::kMissingField);
        if (item.seq >= kMaxStreamCount) return reject(RejectReason::kBadCount);
      }
      return std::nullopt;
    }
    case wire::Envelope::kEndOfStream: {
      if (end_stream.empty() || end_stream.size() > kMaxStreamIdBytes) {
        return reject(RejectReason::kBadStreamId);
      }
      if (!has_end_count) return reject(RejectReason::kMissingField);
      if (end_count > kMaxStreamCount) return reject(RejectReason::kBadCount);
      Item& end = out.Append();
      end.stream.assign(end_stream);
      end.end_of_stream = true;
      end.count = end_count;
      return std::nullopt;
    }
    case wire::Envelope::kAck:
      return reject(RejectReason::kWrongKind);
    case wire::Envelope::BODY_NOT_SET:
      break;
  }
  return reject(RejectReason::kMissingField);
}

std::optional<RejectReason> DecodeFrame(const void* data, size_t size,
                                        size_t max_frame_bytes,
                                        std::vector<Item>& out) {
  ItemRun run;
  std::optional<RejectReason> reject = DecodeFrame(data, size, max_frame_bytes, run);
  for (Item& item : run) out.push_back(std::move(item));
  return reject;
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
  out.queued_us = ack.queued_us();
  out.op_us = ack.op_us();
  out.timed_items = ack.timed_items();
  out.duplicates = ack.duplicates();
  out.span = ack.span();
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

constexpr std::string_view kDonePrefix("\0sluice-done", 12);

std::string DoneTopic(std::string_view stream) {
  std::string topic(kDonePrefix);
  topic.append(stream);
  return topic;
}

std::optional<std::string> ParseDoneTopic(std::string_view topic) {
  if (topic.substr(0, kDonePrefix.size()) != kDonePrefix) return std::nullopt;
  std::string stream(topic.substr(kDonePrefix.size()));
  if (!ValidStreamId(stream)) return std::nullopt;
  return stream;
}

std::optional<std::string> ParseAckTopic(std::string_view topic) {
  if (topic.size() < 5) return std::nullopt;
  std::string stream(topic.substr(4));
  if (AckTopic(stream) != topic || !ValidStreamId(stream)) return std::nullopt;
  return stream;
}

namespace {

using pbio::CodedOutputStream;

size_t BytesFieldSize(size_t length) {
  return 1 + CodedOutputStream::VarintSize32(static_cast<uint32_t>(length)) + length;
}
size_t VarintFieldSize(uint64_t value) {
  return 1 + CodedOutputStream::VarintSize64(value);
}

uint8_t* WriteBytesField(uint32_t tag, std::string_view bytes, uint8_t* p) {
  *p++ = static_cast<uint8_t>(tag);
  p = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(bytes.size()), p);
  std::memcpy(p, bytes.data(), bytes.size());
  return p + bytes.size();
}
uint8_t* WriteVarintField(uint32_t tag, uint64_t value, uint8_t* p) {
  *p++ = static_cast<uint8_t>(tag);
  return CodedOutputStream::WriteVarint64ToArray(value, p);
}

size_t FailureSize(const ItemFailure& f) {
  size_t n = 0;
  if (!f.op.empty()) n += BytesFieldSize(f.op.size());
  if (!f.reason.empty()) n += BytesFieldSize(f.reason.size());
  if (!f.detail.empty()) n += BytesFieldSize(f.detail.size());
  if (!f.worker.empty()) n += BytesFieldSize(f.worker.size());
  if (f.attempts != 0) n += VarintFieldSize(f.attempts);
  return n;
}

// An item's fields (no length prefix); its stream only if it differs from
// the batch's. Fields at their proto3 default are left out, as protobuf
// does.
size_t ItemSize(const Item& item, bool own_stream) {
  size_t n = VarintFieldSize(item.seq);
  if (own_stream) n += BytesFieldSize(item.stream.size());
  if (!item.payload.empty()) n += BytesFieldSize(item.payload.size());
  if (item.produced_at_us != 0) {
    n += VarintFieldSize(static_cast<uint64_t>(item.produced_at_us));
  }
  for (const std::string& more : item.more_payloads) n += BytesFieldSize(more.size());
  if (item.dropped) n += 2;
  if (item.failure) n += BytesFieldSize(FailureSize(*item.failure));
  if (item.queued_us != 0) n += VarintFieldSize(item.queued_us);
  if (item.op_us != 0) n += VarintFieldSize(item.op_us);
  return n;
}

uint8_t* WriteItem(const Item& item, bool own_stream, uint8_t* p) {
  if (own_stream) p = WriteBytesField(Tag(1, kLengthDelimited), item.stream, p);
  p = WriteVarintField(Tag(2, kVarint), item.seq, p);
  if (!item.payload.empty()) p = WriteBytesField(Tag(3, kLengthDelimited), item.payload, p);
  if (item.produced_at_us != 0) {
    p = WriteVarintField(Tag(4, kVarint), static_cast<uint64_t>(item.produced_at_us), p);
  }
  for (const std::string& more : item.more_payloads) {
    p = WriteBytesField(Tag(5, kLengthDelimited), more, p);
  }
  if (item.dropped) p = WriteVarintField(Tag(6, kVarint), 1, p);
  if (item.failure) {
    const ItemFailure& f = *item.failure;
    *p++ = static_cast<uint8_t>(Tag(7, kLengthDelimited));
    p = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(FailureSize(f)), p);
    if (!f.op.empty()) p = WriteBytesField(Tag(1, kLengthDelimited), f.op, p);
    if (!f.reason.empty()) p = WriteBytesField(Tag(2, kLengthDelimited), f.reason, p);
    if (!f.detail.empty()) p = WriteBytesField(Tag(3, kLengthDelimited), f.detail, p);
    if (!f.worker.empty()) p = WriteBytesField(Tag(4, kLengthDelimited), f.worker, p);
    if (f.attempts != 0) p = WriteVarintField(Tag(5, kVarint), f.attempts, p);
  }
  if (item.queued_us != 0) p = WriteVarintField(Tag(8, kVarint), item.queued_us, p);
  if (item.op_us != 0) p = WriteVarintField(Tag(9, kVarint), item.op_us, p);
  return p;
}

}  // namespace

zmq::message_t FrameEncoder::EncodeBatch(std::span<const Item* const> items) {
  const std::string& stream = items.front()->stream;
  sizes_.clear();
  size_t batch = BytesFieldSize(stream.size());
  own_stream_.clear();
  for (const Item* item : items) {
    // Compared once per item; the write below reuses the answer.
    const bool own = item->stream.size() != stream.size() || item->stream != stream;
    const size_t n = ItemSize(*item, own);
    sizes_.push_back(static_cast<uint32_t>(n));
    own_stream_.push_back(own);
    batch += BytesFieldSize(n);
  }
  const size_t total = VarintFieldSize(kWireVersionBatchStream) + BytesFieldSize(batch);
  zmq::message_t frame(total);
  uint8_t* p = static_cast<uint8_t*>(frame.data());
  p = WriteVarintField(Tag(1, kVarint), kWireVersionBatchStream, p);
  *p++ = static_cast<uint8_t>(Tag(2, kLengthDelimited));
  p = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(batch), p);
  p = WriteBytesField(Tag(2, kLengthDelimited), stream, p);
  for (size_t i = 0; i < items.size(); ++i) {
    *p++ = static_cast<uint8_t>(Tag(1, kLengthDelimited));
    p = CodedOutputStream::WriteVarint32ToArray(sizes_[i], p);
    p = WriteItem(*items[i], own_stream_[i] != 0, p);
  }
  return frame;
}

zmq::message_t FrameEncoder::EncodeBatch(std::span<const Item> items) {
  gather_.clear();
  for (const Item& item : items) gather_.push_back(&item);
  return EncodeBatch(std::span<const Item* const>(gather_));
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
  body->set_queued_us(ack.queued_us);
  body->set_op_us(ack.op_us);
  body->set_timed_items(ack.timed_items);
  body->set_duplicates(ack.duplicates);
  body->set_span(ack.span);
  return Serialize();
}

zmq::message_t FrameEncoder::Serialize() {
  zmq::message_t frame(envelope_.ByteSizeLong());
  envelope_.SerializeWithCachedSizesToArray(
      static_cast<uint8_t*>(frame.data()));
  return frame;
}

}  // namespace sluice
