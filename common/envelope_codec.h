// common/envelope_codec.h
//
// Turns Items into wire frames (one protobuf Envelope per ZeroMQ frame) and
// frames back into Items. Decoding treats its input as hostile: it checks, in
// this order, the frame size, that it parses, the version, then the fields
// each body requires, and names the first check that fails. It never throws,
// asserts or allocates more than the frame itself implies.
//
// Batch and end-of-stream frames, the hot path, are read and written
// directly in the protobuf wire format (a two-pointer reader of our own,
// protobuf's varint writers): a frame decodes straight into the recycled items of a
// ItemRun, and encodes straight from items into the frame, with no message
// objects in between. The result is byte-for-byte what the generated classes
// in proto/sluice.pb.h read and write (tests and the fuzzer hold the two to
// it); acks, off the hot path, use the generated classes.
//
// Thread safety: free functions; FrameEncoder instances are not shared.
#ifndef SLUICE_COMMON_ENVELOPE_CODEC_H_
#define SLUICE_COMMON_ENVELOPE_CODEC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "common/item.h"
#include "common/run.h"
#include "proto/sluice.pb.h"

namespace sluice {

// Batch frames are version 3 (Batch.stream: a frame of one stream names it
// once); end-of-stream and ack frames stay at 1. Receivers accept 1, 2 (an
// item's outcomes) and 3.
inline constexpr uint32_t kWireVersion = 1;
inline constexpr uint32_t kWireVersionOutcomes = 2;
inline constexpr uint32_t kWireVersionBatchStream = 3;
inline constexpr size_t kMaxStreamIdBytes = 64;
// Largest stream: 2^40 items. Bounds what a forged count can make a sink do.
inline constexpr uint64_t kMaxStreamCount = uint64_t{1} << 40;
// Default per-frame limit for decoding (receivers' --max-frame-bytes).
inline constexpr size_t kDefaultMaxFrameBytes = 1 << 20;

// Why a frame was dropped. Each reason has a counter "rejected_<name>".
enum class RejectReason {
  kTooLarge = 0,   // Frame longer than the receiver's limit.
  kParseError,     // Not a protobuf Envelope (garbage, truncated).
  kBadVersion,     // Version present but not one we speak.
  kMissingField,   // Version, body, seq or count absent.
  kEmptyBatch,     // A batch with no items.
  kBadStreamId,    // Stream id empty or longer than kMaxStreamIdBytes.
  kBadCount,       // seq or count at or above kMaxStreamCount.
  kWrongKind,      // A valid body of the wrong kind for this socket (an ack
                   // on a data socket, data on an ack socket).
  kBadAckRange,    // Ack ranges odd in number, empty or out of bounds.
};
inline constexpr size_t kRejectReasonCount = 9;
// Stable lower_snake names: "too_large", "parse_error", ...
std::string_view RejectReasonName(RejectReason reason);

// Decodes one frame. On success appends its items (data items, or one
// end-of-stream Item) to `out` and returns nullopt; on failure leaves `out`
// unchanged and returns the reason. A frame is accepted or rejected whole.
// Every item gets its own stream id: the item's, else the batch's.
std::optional<RejectReason> DecodeFrame(const void* data, size_t size,
                                        size_t max_frame_bytes, ItemRun& out);
// The same, appending to a vector (tests, tools).
std::optional<RejectReason> DecodeFrame(const void* data, size_t size,
                                        size_t max_frame_bytes,
                                        std::vector<Item>& out);

enum class HelloAnswer { kNone = 0, kWelcome = 1, kRejected = 2 };

// An acknowledgement from the sink (see Ack in proto/sluice.proto).
struct AckMessage {
  std::string stream;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end)
  bool end_of_stream = false;
  bool complete = false;
  uint64_t hello_epoch = 0;  // Nonzero in the frames of a hello's answer.
  HelloAnswer answer = HelloAnswer::kNone;
  // What the newly acked items said of their time in stages (Ack.queued_us,
  // op_us, timed_items), and duplicates received since the last ack.
  uint64_t queued_us = 0;
  uint64_t op_us = 0;
  uint64_t timed_items = 0;
  uint64_t duplicates = 0;
  uint64_t span = 0;  // On a WELCOME (Ack.span).
};

// Decodes an ack frame, with the same checks as DecodeFrame plus the ranges.
std::optional<RejectReason> DecodeAck(const void* data, size_t size,
                                      size_t max_frame_bytes, AckMessage& out);

// The bytes every ack frame for `stream` starts with: subscribe a SUB socket
// to this to receive the acks of one stream only.
std::string AckTopic(std::string_view stream);

// A producer's hello: a subscription that no frame ever matches (frames
// never start with a zero byte), which tells the sink's XPUB socket that
// instance `epoch` of a producer of `stream` is connected, for as long as it
// stays connected (libzmq reports the unsubscription when it goes). The sink
// answers with a WELCOME (and what it holds of the stream) or, if another
// epoch holds the stream, REJECTED.
std::string HelloTopic(std::string_view stream, uint64_t epoch);
// Parses a HelloTopic; nullopt if `topic` is not one (or its id is invalid).
std::optional<std::pair<std::string, uint64_t>> ParseHelloTopic(std::string_view topic);
// Parses an AckTopic; nullopt if `topic` is not one.
std::optional<std::string> ParseAckTopic(std::string_view topic);

// The sink's word that `stream` is complete, for stages (--acks): a
// message of exactly these bytes, published on the ack socket once the
// completion is committed (and again to a later subscriber). Like the
// hello, it starts with a zero byte, so no ack frame matches it, and a
// stage's subscription is not taken for a producer's.
std::string DoneTopic(std::string_view stream);
// Parses a DoneTopic; nullopt if `topic` is not one (or its id is invalid).
std::optional<std::string> ParseDoneTopic(std::string_view topic);

// Packs items into frames. In steady state encoding allocates only the
// frame itself.
class FrameEncoder {
 public:
  // One version-3 frame holding a batch of `items` (data items, at least
  // one). The batch names the first item's stream; items of another stream
  // carry their own.
  zmq::message_t EncodeBatch(std::span<const Item* const> items);
  zmq::message_t EncodeBatch(std::span<const Item> items);
  // One frame holding an end-of-stream.
  zmq::message_t EncodeEndOfStream(const Item& end);
  // One ack frame; starts with AckTopic(ack.stream).
  zmq::message_t EncodeAck(const AckMessage& ack);

 private:
  zmq::message_t Serialize();
  wire::Envelope envelope_;
  std::vector<uint32_t> sizes_;       // EncodeBatch: encoded size per item,
  std::vector<uint8_t> own_stream_;   // and whether it names its stream.
  std::vector<const Item*> gather_;   // EncodeBatch(span<const Item>).
};

// Bytes an item adds to a batch frame, roughly: used for batch byte caps.
inline size_t ApproxEncodedBytes(const Item& item) {
  size_t bytes = item.stream.size() + item.payload.size() + 24;
  for (const std::string& more : item.more_payloads) bytes += more.size() + 4;
  if (item.failure) {
    bytes += item.failure->op.size() + item.failure->reason.size() +
             item.failure->detail.size() + item.failure->worker.size() + 16;
  }
  return bytes;
}

}  // namespace sluice

#endif  // SLUICE_COMMON_ENVELOPE_CODEC_H_
