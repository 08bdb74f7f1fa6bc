// FrameReceiver and SendLoop over real ZeroMQ sockets (inproc and tcp on an
// ephemeral port), in one process.
#include "common/frame_io.h"

#include <thread>

#include <gtest/gtest.h>

#include "common/socket.h"
#include "proto/sluice.pb.h"

namespace sluice {
namespace {

struct Pair {
  zmq::context_t context{1};
  OpenedSocket pull;
  OpenedSocket push;
};

std::unique_ptr<Pair> Connect(const std::string& transport) {
  auto pair = std::make_unique<Pair>();
  SocketOptions options;
  options.max_frame_bytes = 1000;
  options.linger_ms = 1000;
  std::string address = transport == "tcp" ? "tcp://127.0.0.1:*"
                                           : "inproc://frame-io-test";
  auto pull = OpenSocket(pair->context, zmq::socket_type::pull,
                         {{Role::kBind, address}}, options);
  EXPECT_TRUE(pull.ok()) << pull.status().message();
  pair->pull = std::move(*pull);
  auto push = OpenSocket(pair->context, zmq::socket_type::push,
                         {{Role::kConnect, pair->pull.bound[0]}}, options);
  EXPECT_TRUE(push.ok()) << push.status().message();
  pair->push = std::move(*push);
  return pair;
}

class FrameIo : public ::testing::TestWithParam<std::string> {};

// Receives with no deadline until `done(counters)` holds; a run per
// accepted frame.
template <typename Done>
std::vector<ItemRun> ReceiveUntil(zmq::socket_t& socket, const StopSignal& stop,
                                  const ReceiveOptions& options, RunPool& pool,
                                  ReceiveCounters& counters, Done done) {
  FrameReceiver receiver(socket, stop, options, counters);
  std::vector<ItemRun> runs;
  while (!done(counters)) {
    auto got = receiver.Receive(runs, pool, 1, std::nullopt);
    EXPECT_TRUE(got.ok()) << got.status().message();
    if (!got.ok()) break;
    EXPECT_FALSE(got->has_value()) << "receiving ended early";
    if (got->has_value()) break;
  }
  return runs;
}

TEST_P(FrameIo, SendLoopBatchesItemsAndSendsEndOfStreamInItsOwnFrame) {
  auto pair = Connect(GetParam());
  StopSignal stop;
  BoundedQueue<ItemRun> out(100);
  RunPool pool;
  // Runs of 3 items: the loop packs across them, 4 items a frame.
  ItemRun run;
  for (uint64_t i = 0; i < 10; ++i) {
    Item& item = run.Append();
    item.stream = "s";
    item.seq = i;
    item.payload = std::to_string(i);
    if (run.size() == 3) {
      ASSERT_TRUE(out.Push(std::move(run)));
    }
  }
  run.Append(Item::EndOfStream("s", 10));
  ASSERT_TRUE(out.Push(std::move(run)));
  out.Close();
  SendCounters sent;
  SendOptions options;
  options.batch_items = 4;
  ASSERT_TRUE(SendLoop(pair->push.socket, stop, options, out, pool, sent).ok());
  EXPECT_EQ(sent.tx_items.value(), 10u);
  EXPECT_EQ(sent.tx_end_of_stream.value(), 1u);
  EXPECT_EQ(sent.tx_frames.value(), 4u);  // 4 + 4 + 2 items, then the end.

  ReceiveCounters received;
  std::vector<ItemRun> runs =
      ReceiveUntil(pair->pull.socket, stop, {}, pool, received,
                   [](const ReceiveCounters& c) { return c.rx_end_of_stream.value() == 1; });
  EXPECT_EQ(received.rx_items.value(), 10u);
  ASSERT_EQ(runs.size(), 4u);  // A run per frame.
  std::vector<Item> items;
  for (ItemRun& r : runs) {
    for (Item& item : r) items.push_back(std::move(item));
  }
  ASSERT_EQ(items.size(), 11u);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(items[i].seq, i);
  EXPECT_TRUE(items[10].end_of_stream);
}

TEST_P(FrameIo, ReceiverCountsRejectsByReasonAndKeepsServing) {
  auto pair = Connect(GetParam());
  auto send_raw = [&](const std::string& bytes) {
    zmq::message_t frame(bytes.data(), bytes.size());
    ASSERT_TRUE(pair->push.socket.send(frame, zmq::send_flags::none));
  };
  send_raw("garbage\xff\xff");
  wire::Envelope wrong_version;
  wrong_version.set_version(9);
  wrong_version.mutable_end_of_stream()->set_stream("s");
  wrong_version.mutable_end_of_stream()->set_count(1);
  send_raw(wrong_version.SerializeAsString());
  send_raw(std::string(1500, 'x'));  // Over 1000, under the socket's 2000.
  FrameEncoder encoder;
  zmq::message_t end = encoder.EncodeEndOfStream(Item::EndOfStream("s", 0));
  ASSERT_TRUE(pair->push.socket.send(end, zmq::send_flags::none));

  StopSignal stop;
  RunPool pool;
  ReceiveCounters counters;
  ReceiveOptions options;
  options.max_frame_bytes = 1000;
  // The end-of-stream went last on the one connection: once it is in,
  // every bad frame before it has been seen.
  std::vector<ItemRun> runs =
      ReceiveUntil(pair->pull.socket, stop, options, pool, counters,
                   [](const ReceiveCounters& c) { return c.rx_end_of_stream.value() == 1; });
  EXPECT_EQ(counters.rejected.value(RejectReason::kParseError), 1u);
  EXPECT_EQ(counters.rejected.value(RejectReason::kBadVersion), 1u);
  EXPECT_EQ(counters.rejected.value(RejectReason::kTooLarge), 1u);
  EXPECT_EQ(counters.rejected.total(), 3u);
  EXPECT_EQ(runs.size(), 1u);  // Only the accepted frame became a run.
}

TEST_P(FrameIo, ReceiverReturnsStoppedOnAStopRequest) {
  auto pair = Connect(GetParam());
  StopSignal stop;
  RunPool pool;
  ReceiveCounters counters;
  FrameReceiver receiver(pair->pull.socket, stop, {}, counters);
  std::vector<ItemRun> runs;
  std::thread stopper([&] { stop.Request(); });
  auto result = receiver.Receive(runs, pool, 1, std::nullopt);
  stopper.join();
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(*result, ReceiveEnd::kStopped);
  EXPECT_TRUE(runs.empty());
}

TEST_P(FrameIo, SendLoopGivesUpAfterTheDrainTimeoutWhenNobodyReceives) {
  zmq::context_t context(1);
  auto push = OpenSocket(context, zmq::socket_type::push,
                         {{Role::kBind, GetParam() == "tcp"
                                            ? "tcp://127.0.0.1:*"
                                            : "inproc://nobody"}},
                         {});
  ASSERT_TRUE(push.ok());
  StopSignal stop;
  stop.Request();
  BoundedQueue<ItemRun> out(10);
  RunPool pool;
  ItemRun run;
  run.Append(Item::EndOfStream("s", 0));
  ASSERT_TRUE(out.Push(std::move(run)));
  out.Close();
  SendCounters counters;
  SendOptions options;
  options.drain_timeout = std::chrono::milliseconds(100);
  Status status = SendLoop(push->socket, stop, options, out, pool, counters);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(counters.tx_frames.value(), 0u);
  push->socket.set(zmq::sockopt::linger, 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, FrameIo,
                         ::testing::Values("inproc", "tcp"));

}  // namespace
}  // namespace sluice
