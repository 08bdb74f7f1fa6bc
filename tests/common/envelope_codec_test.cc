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

TEST(EnvelopeCodec, PlainBatchesStayVersion1) {
  std::vector<Item> items(1);
  items[0].stream = "s";
  items[0].payload = "p";
  FrameEncoder encoder;
  zmq::message_t frame = encoder.EncodeBatch(items);
  wire::Envelope e;
  ASSERT_TRUE(e.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
  EXPECT_EQ(e.version(), 1u);
}

// Fan-out, drops and failures travel as version 2, and a reused encoder
// does not carry them over into the next, plain frame.
TEST(EnvelopeCodec, FanOutDropAndFailureRoundTripAsVersion2) {
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
  EXPECT_EQ(e.version(), 2u);
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
  EXPECT_EQ(e.version(), 1u);
  for (const Item& item : out) {
    EXPECT_FALSE(item.failed());
    EXPECT_FALSE(item.dropped);
    EXPECT_TRUE(item.more_payloads.empty());
  }
}

TEST(EnvelopeCodec, RejectsUnknownVersion) {
  wire::Envelope e = ValidBatch();
  e.set_version(3);
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

}  // namespace
}  // namespace sluice
