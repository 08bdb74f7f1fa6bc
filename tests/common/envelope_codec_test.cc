#include "common/envelope_codec.h"

#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "proto/sluice.pb.h"

namespace sluice {
namespace {

std::string Serialize(const wire::Envelope& envelope) {
  std::string bytes;
  envelope.SerializeToString(&bytes);
  return bytes;
}

wire::Envelope ValidBatch() {
  wire::Envelope e;
  e.set_version(kWireVersion);
  wire::Item* item = e.mutable_batch()->add_items();
  item->set_stream("s1");
  item->set_seq(7);
  item->set_payload("token_7");
  item->set_produced_at_us(123);
  return e;
}

std::optional<RejectReason> Decode(const std::string& bytes,
                                   std::vector<Item>& out,
                                   size_t limit = kDefaultMaxFrameBytes) {
  return DecodeFrame(bytes.data(), bytes.size(), limit, out);
}

TEST(EnvelopeCodec, BatchRoundTripsEveryField) {
  std::vector<Item> items(3);
  for (uint64_t i = 0; i < 3; ++i) {
    items[i].stream = "stream-a";
    items[i].seq = i;
    items[i].payload = "p" + std::to_string(i);
    items[i].produced_at_us = 1000 + i;
  }
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeBatch(items);
  std::vector<Item> out;
  ASSERT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out),
            std::nullopt);
  ASSERT_EQ(out.size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out[i].stream, "stream-a");
    EXPECT_EQ(out[i].seq, i);
    EXPECT_EQ(out[i].payload, "p" + std::to_string(i));
    EXPECT_EQ(out[i].produced_at_us, static_cast<int64_t>(1000 + i));
    EXPECT_FALSE(out[i].end_of_stream);
  }
}

TEST(EnvelopeCodec, SeqZeroAndEmptyPayloadSurvive) {
  std::vector<Item> items(1);
  items[0].stream = "s";
  items[0].seq = 0;
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeBatch(items);
  std::vector<Item> out;
  ASSERT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out),
            std::nullopt);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 0u);
  EXPECT_EQ(out[0].payload, "");
}

TEST(EnvelopeCodec, EndOfStreamRoundTrips) {
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeEndOfStream(Item::EndOfStream("s9", 1000));
  std::vector<Item> out;
  ASSERT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out),
            std::nullopt);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].end_of_stream);
  EXPECT_EQ(out[0].stream, "s9");
  EXPECT_EQ(out[0].count, 1000u);
}

TEST(EnvelopeCodec, EmptyStreamEndOfStreamIsValid) {
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeEndOfStream(Item::EndOfStream("s", 0));
  std::vector<Item> out;
  EXPECT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out),
            std::nullopt);
}

TEST(EnvelopeCodec, RejectsTooLargeBeforeParsing) {
  std::string bytes = Serialize(ValidBatch());
  std::vector<Item> out;
  EXPECT_EQ(Decode(bytes, out, bytes.size() - 1), RejectReason::kTooLarge);
  EXPECT_EQ(Decode(bytes, out, bytes.size()), std::nullopt);
}

TEST(EnvelopeCodec, RejectsGarbageAsParseError) {
  std::vector<Item> out;
  EXPECT_EQ(Decode(std::string("\xff\xff\xff\xff\xff garbage", 14), out),
            RejectReason::kParseError);
  EXPECT_TRUE(out.empty());
}

TEST(EnvelopeCodec, RejectsTruncatedFrameAsParseError) {
  std::string bytes = Serialize(ValidBatch());
  std::vector<Item> out;
  EXPECT_EQ(Decode(bytes.substr(0, bytes.size() - 3), out),
            RejectReason::kParseError);
}

// A batch frame is version 3 and names its stream once, in the batch; an
// item of another stream carries its own.
TEST(EnvelopeCodec, BatchFramesAreVersion3AndNameTheirStreamOnce) {
  std::vector<Item> items(3);
  for (uint64_t i = 0; i < 3; ++i) {
    items[i].stream = i == 2 ? "other" : "s";
    items[i].seq = i;
    items[i].payload = "p";
  }
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeBatch(items);
  wire::Envelope e;
  ASSERT_TRUE(e.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
  EXPECT_EQ(e.version(), 3u);
  EXPECT_EQ(e.batch().stream(), "s");
  EXPECT_EQ(e.batch().items(0).stream(), "");
  EXPECT_EQ(e.batch().items(1).stream(), "");
  EXPECT_EQ(e.batch().items(2).stream(), "other");
  std::vector<Item> out;
  ASSERT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out),
            std::nullopt);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].stream, "s");
  EXPECT_EQ(out[1].stream, "s");
  EXPECT_EQ(out[2].stream, "other");
}

// The direct encoder writes exactly what the generated classes write for
// the same message (field order, defaults left out, explicit seq 0).
TEST(EnvelopeCodec, DirectEncodingIsByteForByteTheGeneratedOne) {
  std::vector<Item> items(4);
  for (uint64_t i = 0; i < 4; ++i) {
    items[i].stream = "stream-a";
    items[i].seq = i * 1000;
    items[i].payload = std::string(i * 70, 'x');  // 0, 70, 140 (2-byte length), 210.
    items[i].produced_at_us = i == 1 ? 0 : -5 + static_cast<int64_t>(i);
  }
  items[1].AddOutput("more");
  items[1].AddOutput("");
  items[2].Drop();
  auto failure = std::make_shared<ItemFailure>();
  *failure = {.op = "exec", .reason = "", .detail = "d", .worker = "w", .attempts = 0};
  items[3].failure = failure;
  items[3].stream = "b";

  wire::Envelope e;
  e.set_version(3);
  e.mutable_batch()->set_stream("stream-a");
  for (const Item& item : items) {
    wire::Item* w = e.mutable_batch()->add_items();
    if (item.stream != "stream-a") w->set_stream(item.stream);
    w->set_seq(item.seq);
    w->set_payload(item.payload);
    w->set_produced_at_us(item.produced_at_us);
    for (const std::string& more : item.more_payloads) w->add_more_payloads(more);
    w->set_dropped(item.dropped);
    if (item.failure) {
      w->mutable_failure()->set_op(item.failure->op);
      w->mutable_failure()->set_detail(item.failure->detail);
      w->mutable_failure()->set_worker(item.failure->worker);
    }
  }
  // The generated code writes fields in number order; ours writes the
  // batch's stream first. Both parse to the same message.
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeBatch(items);
  wire::Envelope parsed;
  ASSERT_TRUE(parsed.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
  EXPECT_EQ(parsed.SerializeAsString(), e.SerializeAsString());
  EXPECT_EQ(frame.size(), e.ByteSizeLong());
}

// Frames of versions 1 and 2 (each item names its stream) still decode.
TEST(EnvelopeCodec, Version1And2FramesStillDecode) {
  for (uint32_t version : {1u, 2u}) {
    wire::Envelope e = ValidBatch();
    e.set_version(version);
    std::vector<Item> out;
    ASSERT_EQ(Decode(Serialize(e), out), std::nullopt) << version;
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].stream, "s1");
    EXPECT_EQ(out[0].seq, 7u);
    EXPECT_EQ(out[0].payload, "token_7");
    EXPECT_EQ(out[0].produced_at_us, 123);
  }
}

// The decoder reads what protobuf reads: unknown fields are skipped, a
// field given twice keeps the last value (repeated ones add up), an
// embedded message given twice is merged, and a later body of another kind
// replaces the earlier one.
TEST(EnvelopeCodec, DecoderFollowsProtobufMergeRules) {
  wire::Envelope first = ValidBatch();
  first.set_version(3);
  first.mutable_batch()->mutable_items(0)->add_more_payloads("a");
  wire::Envelope second;
  second.mutable_batch()->add_items()->set_seq(8);
  second.mutable_batch()->set_stream("batch-stream");
  wire::Item* again = second.mutable_batch()->add_items();
  again->set_seq(9);
  again->set_payload("old");
  std::string bytes = Serialize(first) + Serialize(second);
  // A third batch adds one more item; unknown fields (number 15, of each
  // wire type) are skipped; the version given twice keeps the last.
  wire::Envelope patch;
  wire::Item* item = patch.mutable_batch()->add_items();
  item->set_seq(10);
  item->set_payload("x");
  bytes += Serialize(patch);
  bytes += std::string("\x78\x05", 2) + std::string("\x7a\x02hi", 4) +
           std::string("\x7d\x01\x02\x03\x04", 5) +
           std::string("\x79\x01\x02\x03\x04\x05\x06\x07\x08", 9) +
           std::string("\x08\x02", 2);
  std::vector<Item> out;
  ASSERT_EQ(Decode(bytes, out), std::nullopt);
  wire::Envelope reference;
  ASSERT_TRUE(reference.ParseFromString(bytes));
  ASSERT_EQ(out.size(), static_cast<size_t>(reference.batch().items_size()));
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].stream, "s1");  // Its own stream wins.
  EXPECT_EQ(out[0].more_payloads, std::vector<std::string>{"a"});
  EXPECT_EQ(out[1].stream, "batch-stream");
  EXPECT_EQ(out[2].payload, "old");
  EXPECT_EQ(out[3].payload, "x");

  // An end-of-stream after a batch replaces it, as the oneof does.
  wire::Envelope end;
  end.mutable_end_of_stream()->set_stream("e");
  end.mutable_end_of_stream()->set_count(3);
  out.clear();
  ASSERT_EQ(Decode(Serialize(first) + Serialize(end), out), std::nullopt);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].end_of_stream);
  EXPECT_EQ(out[0].count, 3u);
}

// Where CodedInputStream alone would be laxer than protobuf's parser, the
// decoder is not: a length or tag of too many bytes, a submessage that runs
// past the end of the frame. (Found by the fuzzer's parity check.)
TEST(EnvelopeCodec, OverlongVarintsAndShortSubmessagesAreParseErrors) {
  std::vector<Item> out;
  // Version 1, then a batch whose length (1) is written in 6 bytes.
  EXPECT_EQ(Decode(std::string("\x08\x01\x12\x81\x80\x80\x80\x80\x00\x00", 10), out),
            RejectReason::kParseError);
  // An unknown field's tag written in 6 bytes.
  EXPECT_EQ(Decode(std::string("\x08\x01\xf8\x80\x80\x80\x80\x00\x01", 9), out),
            RejectReason::kParseError);
  // An end-of-stream whose length says 828 bytes; 6 follow.
  EXPECT_EQ(Decode(std::string("\x08\x01\x1a\xbc\x06\x0a\x02s1\x10\x0a", 11), out),
            RejectReason::kParseError);
  EXPECT_TRUE(out.empty());
}

// A frame decodes into a recycled run without disturbing what the run
// already holds, and a rejected frame leaves it exactly as it was.
TEST(EnvelopeCodec, DecodingAppendsToARunAndARejectLeavesItUnchanged) {
  ItemRun run;
  std::string good = Serialize(ValidBatch());
  ASSERT_EQ(DecodeFrame(good.data(), good.size(), kDefaultMaxFrameBytes, run),
            std::nullopt);
  wire::Envelope bad = ValidBatch();
  bad.mutable_batch()->add_items()->set_stream("s1");  // No seq: rejected...
  std::string bytes = Serialize(bad);
  EXPECT_EQ(DecodeFrame(bytes.data(), bytes.size(), kDefaultMaxFrameBytes, run),
            RejectReason::kMissingField);
  ASSERT_EQ(run.size(), 1u);  // ...after it had appended two items.
  EXPECT_EQ(run[0].payload, "token_7");
  run.Clear();
  ASSERT_EQ(DecodeFrame(good.data(), good.size(), kDefaultMaxFrameBytes, run),
            std::nullopt);
  ASSERT_EQ(run.size(), 1u);  // A reused slot holds nothing of before.
  EXPECT_EQ(run[0].more_payloads.size(), 0u);
  EXPECT_FALSE(run[0].failed());
}

// Time in stages travels with the item (the producer's flow control reads
// it from the sink's acks); a recycled slot forgets it, or it would grow
// without end as runs are reused.
TEST(EnvelopeCodec, StageTimesRoundTripAndARecycledSlotForgetsThem) {
  std::vector<Item> items(2);
  for (uint64_t i = 0; i < 2; ++i) {
    items[i].stream = "s";
    items[i].seq = i;
  }
  items[0].queued_us = 1500;
  items[0].op_us = 9000;
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeBatch(items);
  wire::Envelope e;
  ASSERT_TRUE(e.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
  EXPECT_EQ(e.batch().items(0).queued_us(), 1500u);
  EXPECT_EQ(e.batch().items(0).op_us(), 9000u);
  ItemRun run;
  ASSERT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, run),
            std::nullopt);
  ASSERT_EQ(run.size(), 2u);
  EXPECT_EQ(run[0].queued_us, 1500u);
  EXPECT_EQ(run[0].op_us, 9000u);
  EXPECT_EQ(run[1].queued_us, 0u);
  // The same slots, now for a frame whose items carry no times.
  items[0].queued_us = items[0].op_us = 0;
  zmq::message_t plain = encoder.EncodeBatch(items);
  run.Clear();
  ASSERT_EQ(DecodeFrame(plain.data(), plain.size(), kDefaultMaxFrameBytes, run),
            std::nullopt);
  EXPECT_EQ(run[0].queued_us, 0u);
  EXPECT_EQ(run[0].op_us, 0u);
  // Values beyond 32 bits saturate.
  wire::Envelope big;
  big.set_version(3);
  wire::Item* item = big.mutable_batch()->add_items();
  item->set_stream("s");
  item->set_seq(0);
  item->set_queued_us(uint64_t{1} << 40);
  std::string bytes = Serialize(big);
  run.Clear();
  ASSERT_EQ(DecodeFrame(bytes.data(), bytes.size(), kDefaultMaxFrameBytes, run),
            std::nullopt);
  EXPECT_EQ(run[0].queued_us, UINT32_MAX);
}

// Fan-out, drops and failures round-trip, and a reused encoder does not
// carry them over into the next, plain frame.
TEST(EnvelopeCodec, FanOutDropAndFailureRoundTrip) {
  std::vector<Item> items(3);
  for (uint64_t i = 0; i < 3; ++i) {
    items[i].stream = "s";
    items[i].seq = i;
    items[i].payload = "p" + std::to_string(i);
  }
  items[0].AddOutput("more");
  items[1].Drop();
  auto failure = std::make_shared<ItemFailure>();
  *failure = {.op = "exec", .reason = "timeout", .detail = "timeout: 5 ms",
              .worker = "h:1/exec#0", .attempts = 3};
  items[2].failure = failure;
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeBatch(items);
  wire::Envelope e;
  ASSERT_TRUE(e.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
  EXPECT_EQ(e.version(), 3u);
  std::vector<Item> out;
  ASSERT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out),
            std::nullopt);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].payload, "p0");
  EXPECT_EQ(out[0].more_payloads, std::vector<std::string>{"more"});
  EXPECT_EQ(out[0].output_count(), 2u);
  EXPECT_TRUE(out[1].dropped);
  EXPECT_EQ(out[1].output_count(), 0u);
  ASSERT_TRUE(out[2].failed());
  EXPECT_EQ(out[2].payload, "p2");
  EXPECT_EQ(out[2].failure->op, "exec");
  EXPECT_EQ(out[2].failure->reason, "timeout");
  EXPECT_EQ(out[2].failure->detail, "timeout: 5 ms");
  EXPECT_EQ(out[2].failure->worker, "h:1/exec#0");
  EXPECT_EQ(out[2].failure->attempts, 3u);

  std::vector<Item> plain(3);
  for (Item& item : plain) item.stream = "s";
  frame = encoder.EncodeBatch(plain);
  out.clear();
  ASSERT_EQ(DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out),
            std::nullopt);
  ASSERT_TRUE(e.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
  EXPECT_EQ(e.version(), 3u);
  for (const Item& item : out) {
    EXPECT_FALSE(item.failed());
    EXPECT_FALSE(item.dropped);
    EXPECT_TRUE(item.more_payloads.empty());
  }
}

TEST(EnvelopeCodec, RejectsUnknownVersion) {
  wire::Envelope e = ValidBatch();
  e.set_version(4);
  std::vector<Item> out;
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kBadVersion);
  e.set_version(0);
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kBadVersion);
}

TEST(EnvelopeCodec, RejectsMissingVersion) {
  wire::Envelope e = ValidBatch();
  e.clear_version();
  std::vector<Item> out;
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kMissingField);
}

TEST(EnvelopeCodec, RejectsEmptyFrameAndMissingBody) {
  std::vector<Item> out;
  EXPECT_EQ(Decode("", out), RejectReason::kMissingField);  // No version.
  wire::Envelope e;
  e.set_version(kWireVersion);
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kMissingField);
}

TEST(EnvelopeCodec, RejectsItemWithoutSeq) {
  wire::Envelope e = ValidBatch();
  e.mutable_batch()->mutable_items(0)->clear_seq();
  std::vector<Item> out;
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kMissingField);
}

TEST(EnvelopeCodec, RejectsEndOfStreamWithoutCount) {
  wire::Envelope e;
  e.set_version(kWireVersion);
  e.mutable_end_of_stream()->set_stream("s");
  std::vector<Item> out;
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kMissingField);
}

TEST(EnvelopeCodec, RejectsEmptyBatch) {
  wire::Envelope e;
  e.set_version(kWireVersion);
  e.mutable_batch();
  std::vector<Item> out;
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kEmptyBatch);
}

TEST(EnvelopeCodec, RejectsBadStreamIds) {
  std::vector<Item> out;
  wire::Envelope e = ValidBatch();
  e.mutable_batch()->mutable_items(0)->set_stream("");
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kBadStreamId);
  e.mutable_batch()->mutable_items(0)->set_stream(std::string(65, 'x'));
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kBadStreamId);
  wire::Envelope end;
  end.set_version(kWireVersion);
  end.mutable_end_of_stream()->set_count(1);
  EXPECT_EQ(Decode(Serialize(end), out), RejectReason::kBadStreamId);
}

TEST(EnvelopeCodec, RejectsSeqOrCountBeyondTheLargestStream) {
  std::vector<Item> out;
  wire::Envelope e = ValidBatch();
  e.mutable_batch()->mutable_items(0)->set_seq(kMaxStreamCount);
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kBadCount);
  wire::Envelope end;
  end.set_version(kWireVersion);
  end.mutable_end_of_stream()->set_stream("s");
  end.mutable_end_of_stream()->set_count(kMaxStreamCount + 1);
  EXPECT_EQ(Decode(Serialize(end), out), RejectReason::kBadCount);
}

TEST(EnvelopeCodec, OneBadItemRejectsTheWholeFrameAndLeavesOutputUntouched) {
  wire::Envelope e = ValidBatch();
  wire::Item* bad = e.mutable_batch()->add_items();
  bad->set_stream("s1");  // No seq.
  std::vector<Item> out(1);
  EXPECT_EQ(Decode(Serialize(e), out), RejectReason::kMissingField);
  EXPECT_EQ(out.size(), 1u);
}

TEST(EnvelopeCodec, EveryReasonHasADistinctName) {
  std::set<std::string_view> names;
  for (size_t i = 0; i < kRejectReasonCount; ++i) {
    names.insert(RejectReasonName(static_cast<RejectReason>(i)));
  }
  EXPECT_EQ(names.size(), kRejectReasonCount);
  EXPECT_EQ(RejectReasonName(RejectReason::kTooLarge), "too_large");
}

std::optional<RejectReason> DecodeAckBytes(const std::string& bytes, AckMessage& out) {
  return DecodeAck(bytes.data(), bytes.size(), kDefaultMaxFrameBytes, out);
}

wire::Envelope ValidAck() {
  wire::Envelope e;
  e.set_version(kWireVersion);
  e.set_ack_stream("s1");
  e.mutable_ack()->add_ranges(0);
  e.mutable_ack()->add_ranges(10);
  return e;
}

TEST(EnvelopeCodec, AckRoundTripsWithTheHelloAnswerAndStartsWithItsTopic) {
  FrameEncoder encoder;
  AckMessage ack{.stream = "s1", .ranges = {{0, 5}, {9, 12}}, .end_of_stream = true,
                 .complete = false, .hello_epoch = 0xfeedfacecafebeefULL,
                 .answer = HelloAnswer::kWelcome};
  zmq::message_t frame = encoder.EncodeAck(ack);
  std::string bytes(static_cast<const char*>(frame.data()), frame.size());
  EXPECT_EQ(bytes.rfind(AckTopic("s1"), 0), 0u);
  AckMessage out;
  ASSERT_EQ(DecodeAckBytes(bytes, out), std::nullopt);
  EXPECT_EQ(out.stream, "s1");
  EXPECT_EQ(out.ranges, ack.ranges);
  EXPECT_TRUE(out.end_of_stream);
  EXPECT_FALSE(out.complete);
  EXPECT_EQ(out.hello_epoch, 0xfeedfacecafebeefULL);
  EXPECT_EQ(out.answer, HelloAnswer::kWelcome);
}

// Data on the ack socket and an ack on a data socket are valid frames of
// the wrong kind: rejected as such, never misread.
TEST(EnvelopeCodec, RejectsAValidBodyOfTheWrongKindOnEitherSocket) {
  std::vector<Item> items;
  EXPECT_EQ(Decode(Serialize(ValidAck()), items), RejectReason::kWrongKind);
  EXPECT_TRUE(items.empty());
  AckMessage ack;
  EXPECT_EQ(DecodeAckBytes(Serialize(ValidBatch()), ack), RejectReason::kWrongKind);
  wire::Envelope end;
  end.set_version(kWireVersion);
  end.mutable_end_of_stream()->set_stream("s1");
  end.mutable_end_of_stream()->set_count(3);
  EXPECT_EQ(DecodeAckBytes(Serialize(end), ack), RejectReason::kWrongKind);
}

TEST(EnvelopeCodec, RejectsAckRangesThatAreOddEmptyReversedOrOutOfBounds) {
  AckMessage ack;
  auto with_ranges = [](std::vector<uint64_t> ranges) {
    wire::Envelope e = ValidAck();
    e.mutable_ack()->clear_ranges();
    for (uint64_t r : ranges) e.mutable_ack()->add_ranges(r);
    return Serialize(e);
  };
  EXPECT_EQ(DecodeAckBytes(with_ranges({1, 5, 9}), ack), RejectReason::kBadAckRange);
  EXPECT_EQ(DecodeAckBytes(with_ranges({5, 5}), ack), RejectReason::kBadAckRange);
  EXPECT_EQ(DecodeAckBytes(with_ranges({6, 5}), ack), RejectReason::kBadAckRange);
  EXPECT_EQ(DecodeAckBytes(with_ranges({0, kMaxStreamCount + 1}), ack),
            RejectReason::kBadAckRange);
  EXPECT_EQ(DecodeAckBytes(with_ranges({0, kMaxStreamCount}), ack), std::nullopt);
  wire::Envelope no_stream = ValidAck();
  no_stream.clear_ack_stream();
  EXPECT_EQ(DecodeAckBytes(Serialize(no_stream), ack), RejectReason::kBadStreamId);
}

// Stream ids are bytes: an id that is not UTF-8 decodes (and is only then
// validated for length), with no complaint from libprotobuf.
TEST(EnvelopeCodec, StreamIdsAreBytesNotUtf8Strings) {
  wire::Envelope e = ValidBatch();
  e.mutable_batch()->mutable_items(0)->set_stream(std::string("\xff\xfe", 2));
  std::vector<Item> items;
  ASSERT_EQ(Decode(Serialize(e), items), std::nullopt);
  EXPECT_EQ(items[0].stream, std::string("\xff\xfe", 2));
}

TEST(EnvelopeCodec, HelloAndAckTopicsParseBackAndRejectAnythingElse) {
  const std::string hello = HelloTopic("s1", 42);
  EXPECT_EQ(hello[0], '\0');  // No frame starts with a zero byte.
  auto parsed = ParseHelloTopic(hello);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->first, "s1");
  EXPECT_EQ(parsed->second, 42u);
  EXPECT_EQ(ParseAckTopic(AckTopic("s1")), "s1");
  EXPECT_EQ(ParseHelloTopic(AckTopic("s1")), std::nullopt);
  EXPECT_EQ(ParseAckTopic(hello), std::nullopt);
  EXPECT_EQ(ParseHelloTopic(HelloTopic("s1", 0)), std::nullopt);  // Epoch 0.
  EXPECT_EQ(ParseHelloTopic(HelloTopic(std::string(65, 'x'), 1)), std::nullopt);
  EXPECT_EQ(ParseAckTopic(AckTopic("s1") + "x"), std::nullopt);
  EXPECT_EQ(ParseAckTopic("junk"), std::nullopt);
}

}  // namespace
}  // namespace sluice
