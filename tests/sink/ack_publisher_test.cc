// AckPublisher over a real XPUB/SUB pair on inproc: batching, completion,
// the answers to producers' hellos, and the caps on subscriptions.
#include "sink/ack_publisher.h"

#include <gtest/gtest.h>

#include "common/endpoint.h"
#include "common/socket.h"

namespace sluice {
namespace {

using Clock = std::chrono::steady_clock;

class AckPublisherTest : public ::testing::Test {
 protected:
  AckPublisherTest() {
    auto opened = OpenSocket(context_, zmq::socket_type::xpub,
                             {{Role::kBind, "inproc://acks"}}, {});
    EXPECT_TRUE(opened.ok());
    xpub_ = std::move(opened->socket);
  }
  zmq::socket_t Subscriber(const std::vector<std::string>& topics) {
    zmq::socket_t sub(context_, zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    sub.connect("inproc://acks");
    for (const std::string& t : topics) sub.set(zmq::sockopt::subscribe, t);
    return sub;
  }
  // Reads subscriptions until every one `sub` has made so far is in: `sub`
  // adds a marker that is neither an ack topic, a hello nor a completion, and the
  // publisher reads until it has refused that marker. One subscriber's
  // subscriptions travel in order through one pipe, so those made before
  // the marker have been read by then.
  void Settle(AckPublisher& acks, zmq::socket_t& sub) {
    const uint64_t refused = counters_.rejected_subscriptions.value();
    sub.set(zmq::sockopt::subscribe, "settle-" + std::to_string(++markers_));
    while (counters_.rejected_subscriptions.value() == refused) {
      WaitForSubscriptions();
      ASSERT_TRUE(acks.ReadSubscriptions(Clock::now()).ok());
    }
  }
  // Reads the unsubscriptions of a subscriber that was closed: libzmq
  // queues them all at once when it drops the subscriber's pipe.
  void SettleClosed(AckPublisher& acks) {
    WaitForSubscriptions();
    ASSERT_TRUE(acks.ReadSubscriptions(Clock::now()).ok());
  }
  // Blocks until the XPUB socket has a (un)subscription to read; the 20 s
  // bound only keeps a broken build from hanging.
  void WaitForSubscriptions() {
    zmq::pollitem_t item = {xpub_.handle(), 0, ZMQ_POLLIN, 0};
    ASSERT_EQ(zmq::poll(&item, 1, std::chrono::seconds(20)), 1)
        << "no (un)subscription reached the publisher";
  }
  // The next ack `sub` receives; the 20 s bound only keeps a broken build
  // from hanging.
  std::optional<AckMessage> Receive(zmq::socket_t& sub) {
    zmq::message_t frame;
    zmq::pollitem_t item = {sub.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::seconds(20));
    if (!sub.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
    AckMessage ack;
    if (DecodeAck(frame.data(), frame.size(), kDefaultMaxFrameBytes, ack)) return std::nullopt;
    return ack;
  }

  zmq::context_t context_{1};
  zmq::socket_t xpub_;
  AckCounters counters_;
  int markers_ = 0;  // Settle()'s markers so far; each is refused once.
};

TEST_F(AckPublisherTest, BatchesTakenItemsIntoRangesAndSendsCompletionAtOnce) {
  AckPublisher acks(&xpub_, AckOptions{.batch_items = 1000,
                                       .interval = std::chrono::hours(1)},
                    counters_);
  zmq::socket_t sub = Subscriber({AckTopic("s")});
  Settle(acks, sub);
  auto now = Clock::now();
  for (uint64_t seq : {3, 1, 2, 7}) acks.Taken("s", seq, 0, 0, now);
  EXPECT_FALSE(acks.Due(now));  // Neither the batch nor the interval is full.
  acks.Completed("s", now);     // Completion is urgent.
  EXPECT_TRUE(acks.Due(now));
  ASSERT_TRUE(acks.Publish(now, false).ok());
  auto ack = Receive(sub);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->ranges, (std::vector<std::pair<uint64_t, uint64_t>>{{1, 4}, {7, 8}}));
  EXPECT_TRUE(ack->complete);
  EXPECT_EQ(counters_.acks_sent.value(), 1u);
}

// A stage's subscription to a stream's completion (DoneTopic) gets it once
// published, and again if it subscribes after; it does not count as the
// producer hearing the stream complete, which the sink waits for at exit.
TEST_F(AckPublisherTest, CompletionReachesStagesWithoutStandingInForTheProducer) {
  AckPublisher acks(&xpub_, AckOptions{}, counters_);
  zmq::socket_t stage = Subscriber({DoneTopic("s")});
  Settle(acks, stage);
  auto now = Clock::now();
  acks.Completed("s", now);
  EXPECT_TRUE(acks.Due(now));
  ASSERT_TRUE(acks.Publish(now, false).ok());
  auto read = [](zmq::socket_t& sub) {
    zmq::message_t message;
    zmq::pollitem_t item = {sub.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::seconds(20));
    if (!sub.recv(message, zmq::recv_flags::dontwait)) return std::string("(none)");
    return message.to_string();
  };
  EXPECT_EQ(read(stage), DoneTopic("s"));
  zmq::socket_t late = Subscriber({DoneTopic("s")});
  Settle(acks, late);
  ASSERT_TRUE(acks.Publish(Clock::now(), false).ok());
  EXPECT_EQ(read(late), DoneTopic("s"));
  // Nobody subscribed to the acks of "s": the producer has not heard.
  auto missing = acks.AwaitSubscribers(Clock::now());
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(*missing, std::vector<std::string>{"s"});
}

TEST_F(AckPublisherTest, AckSumsTimeInStagesOfNewItemsAndCountsDuplicates) {
  AckPublisher acks(&xpub_, AckOptions{.batch_items = 1000,
                                       .interval = std::chrono::hours(1)},
                    counters_);
  zmq::socket_t sub = Subscriber({AckTopic("s")});
  Settle(acks, sub);
  auto now = Clock::now();
  acks.Taken("s", 0, 100, 2000, now);
  acks.Taken("s", 1, 300, 4000, now);
  acks.Taken("s", 2, 0, 0, now);  // Not measured (a cheap op): not counted.
  acks.Duplicate("s", 1, now);
  acks.Duplicate("s", 5, now);
  ASSERT_TRUE(acks.Publish(now, true).ok());
  auto ack = Receive(sub);
  ASSERT_TRUE(ack.has_value());
  // Duplicates are acked again, as the items they duplicate.
  EXPECT_EQ(ack->ranges, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 3}, {5, 6}}));
  EXPECT_EQ(ack->queued_us, 400u);
  EXPECT_EQ(ack->op_us, 6000u);
  EXPECT_EQ(ack->timed_items, 2u);
  EXPECT_EQ(ack->duplicates, 2u);
  // The next ack starts from zero.
  acks.Taken("s", 3, 0, 0, now);
  ASSERT_TRUE(acks.Publish(now, true).ok());
  ack = Receive(sub);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->timed_items, 0u);
  EXPECT_EQ(ack->duplicates, 0u);
}

TEST_F(AckPublisherTest, HelloIsWelcomedWithWhatTheSinkHoldsAndASecondEpochRejected) {
  AckPublisher acks(&xpub_, AckOptions{}, counters_,
                    [](const std::string& stream, AckMessage& ack) {
                      EXPECT_EQ(stream, "s");
                      ack.ranges = {{0, 100}, {150, 160}};
                      ack.end_of_stream = true;
                    });
  zmq::socket_t first = Subscriber({AckTopic("s"), HelloTopic("s", 1)});
  Settle(acks, first);
  EXPECT_TRUE(acks.Due(Clock::now()));
  ASSERT_TRUE(acks.Publish(Clock::now(), false).ok());
  auto welcome = Receive(first);
  ASSERT_TRUE(welcome.has_value());
  EXPECT_EQ(welcome->answer, HelloAnswer::kWelcome);
  EXPECT_EQ(welcome->hello_epoch, 1u);
  EXPECT_EQ(welcome->ranges.size(), 2u);
  EXPECT_TRUE(welcome->end_of_stream);

  zmq::socket_t second = Subscriber({AckTopic("s"), HelloTopic("s", 2)});
  Settle(acks, second);
  ASSERT_TRUE(acks.Publish(Clock::now(), false).ok());
  auto rejected = Receive(second);
  ASSERT_TRUE(rejected.has_value());
  EXPECT_EQ(rejected->answer, HelloAnswer::kRejected);
  EXPECT_EQ(rejected->hello_epoch, 2u);
  EXPECT_TRUE(rejected->ranges.empty());
  EXPECT_EQ(counters_.hellos_rejected.value(), 1u);

  // The holder goes: the stream is free for the next instance.
  first.close();
  SettleClosed(acks);
  zmq::socket_t third = Subscriber({AckTopic("s"), HelloTopic("s", 3)});
  Settle(acks, third);
  ASSERT_TRUE(acks.Publish(Clock::now(), false).ok());
  auto welcome3 = Receive(third);
  ASSERT_TRUE(welcome3.has_value());
  EXPECT_EQ(welcome3->answer, HelloAnswer::kWelcome);
  EXPECT_EQ(welcome3->hello_epoch, 3u);
}

// Subscriptions are peer input: anything that is not an ack topic or a
// hello of a valid id is ignored and counted, and at most max_topics
// distinct ones are applied.
TEST_F(AckPublisherTest, ForeignAndExcessSubscriptionsAreCountedAndNeverApplied) {
  AckPublisher acks(&xpub_, AckOptions{.max_topics = 10}, counters_);
  std::vector<std::string> topics = {"junk", std::string("\x08\x01\x22\x05sh", 6)};
  for (int i = 0; i < 20; ++i) topics.push_back(AckTopic("s" + std::to_string(i)));
  zmq::socket_t sub = Subscriber(topics);
  Settle(acks, sub);
  // 2 foreign + 10 over the cap, besides Settle()'s own marker.
  EXPECT_EQ(counters_.rejected_subscriptions.value() - markers_, 12u);
  // An applied topic receives; one over the cap does not.
  // Published s19 first: had it gone out, it would arrive before s0.
  auto now = Clock::now();
  acks.Taken("s19", 1, 0, 0, now);
  ASSERT_TRUE(acks.Publish(now, true).ok());
  acks.Taken("s0", 1, 0, 0, now);
  ASSERT_TRUE(acks.Publish(now, true).ok());
  auto ack = Receive(sub);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->stream, "s0");
  zmq::message_t after;
  EXPECT_FALSE(sub.recv(after, zmq::recv_flags::dontwait));
}

}  // namespace
}  // namespace sluice
