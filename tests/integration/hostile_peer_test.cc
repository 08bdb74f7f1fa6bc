// Issue 8, point 8: state a peer can blow up. Valid but hostile frames and
// subscriptions against a running sink: its memory stays bounded, what is
// refused is counted, and nothing is logged once per frame.
#include <gtest/gtest.h>
#include <zmq.hpp>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

constexpr long kSinkBoundKib = 64 * 1024;

// Sequence numbers far apart used to cost one bitmap chunk each: two 1 MB
// frames 16,384 apart took the sink to 412 MB. Now only the window above
// the lowest missing number is ever held.
TEST(HostilePeer, ScatteredSequenceNumbersAreRefusedBeyondTheWindowAndMemoryStaysBounded) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--streams", "0",
                                    "--stats-interval", "0.1", "--acks", "off",
                                    "--seen-window", "1048576"});
  std::string in = sink->WaitReady()["in"];
  Injector injector(in);
  std::vector<uint64_t> seqs;
  for (uint64_t i = 0; i < 2000; ++i) seqs.push_back(i * 16384);  // 1 of 2000 in the window.
  for (int frame = 0; frame < 50; ++frame) {
    injector.Send(BatchFrame("scatter" + std::to_string(frame), seqs, std::string(400, 'p')));
  }
  ASSERT_TRUE(WaitUntilCounterAtLeast(*sink, "rx_items", 50 * 2000))
      << sink->LastCounters().dump();
  // 0, 16384, ..., 2^20: 65 numbers of each stream fall in the window.
  ASSERT_TRUE(WaitUntilCounterAtLeast(*sink, "beyond_window", 50 * (2000 - 65)));
  EXPECT_LT(sink->RssKib(), kSinkBoundKib);
  nlohmann::json counters = sink->LastCounters();
  EXPECT_EQ(counters["items_new"], 50 * 65);
  sink->Signal(SIGTERM);
  EXPECT_EQ(sink->Wait(std::chrono::seconds(20)), 75);  // Streams incomplete.
}

// A peer subscribing to 100,000 distinct topics on the ack socket: only
// checked, capped subscriptions are applied; the rest are counted.
TEST(HostilePeer, FloodOfSubscriptionsIsCappedAndCounted) {
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--streams", "0",
                                    "--stats-interval", "0.1", "--max-streams", "16"});
  std::string acks = sink->WaitReady()["acks"];
  zmq::context_t context(1);
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::linger, 0);
  sub.set(zmq::sockopt::sndhwm, 0);  // Else libzmq itself drops past 1,000.
  sub.connect(acks);
  for (int i = 0; i < 100000; ++i) {
    sub.set(zmq::sockopt::subscribe, "topic-" + std::to_string(i));
  }
  sub.set(zmq::sockopt::subscribe, std::string(1000, 'x'));  // Over the size limit.
  ASSERT_TRUE(WaitUntilCounterAtLeast(*sink, "rejected_subscriptions", 100000 - 64))
      << sink->LastCounters().dump();
  EXPECT_LT(sink->RssKib(), kSinkBoundKib);
  sink->Signal(SIGTERM);
  EXPECT_EQ(sink->Wait(std::chrono::seconds(20)), 0) << sink->err();
}

// Stream ids are bytes on the wire: ids that are not UTF-8 are taken,
// reported as base64, and cost no log line per frame.
TEST(HostilePeer, NonUtf8StreamIdsAreTakenWithoutALogLinePerFrame) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--acks", "off",
                                    "--report", dir.File("report.json"),
                                    "--stats-interval", "0.1"});
  std::string in = sink->WaitReady()["in"];
  Injector injector(in);
  const std::string stream("\xff\xfe\x01", 3);
  for (uint64_t i = 0; i < 1000; ++i) injector.Send(BatchFrame(stream, {i}));
  injector.Send(EndOfStreamFrame(stream, 1000));
  EXPECT_EQ(sink->Wait(std::chrono::seconds(30)), 0) << sink->err();
  nlohmann::json report = ReadReport(dir.File("report.json"));
  EXPECT_EQ(report["unique"], 1000);
  EXPECT_EQ(report["streams"][0]["stream"], "base64://4B");
  const std::string err = sink->err();
  EXPECT_EQ(err.find("protobuf"), std::string::npos) << err;
  EXPECT_EQ(sink->LastCounters()["rejected_parse_error"], 0) << err;
}

}  // namespace
}  // namespace sluice::testing
