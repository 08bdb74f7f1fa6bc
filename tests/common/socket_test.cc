#include "common/socket.h"

#include <thread>

#include <gtest/gtest.h>

#include "common/stop_signal.h"

namespace sluice {
namespace {

TEST(Socket, BindReportsTheResolvedEphemeralAddress) {
  zmq::context_t context(1);
  auto opened = OpenSocket(context, zmq::socket_type::pull,
                           {{Role::kBind, "tcp://127.0.0.1:*"}}, {});
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  ASSERT_EQ(opened->bound.size(), 1u);
  const std::string prefix = "tcp://127.0.0.1:";
  ASSERT_EQ(opened->bound[0].rfind(prefix, 0), 0u);
  // A real port, not the '*' asked for: a number a peer can connect to.
  const std::string port = opened->bound[0].substr(prefix.size());
  ASSERT_FALSE(port.empty());
  EXPECT_EQ(port.find_first_not_of("0123456789"), std::string::npos) << port;
  EXPECT_GT(std::stoi(port), 0);
  EXPECT_LE(std::stoi(port), 65535);
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 0);
  push.connect(opened->bound[0]);
  ASSERT_TRUE(push.send(zmq::str_buffer("hello"), zmq::send_flags::none));
  zmq::message_t got;
  ASSERT_TRUE(opened->socket.recv(got, zmq::recv_flags::none));
  EXPECT_EQ(got.to_string(), "hello");
  EXPECT_EQ(DescribeAddresses({{Role::kBind, "tcp://127.0.0.1:*"},
                               {Role::kConnect, "tcp://hub:5558"}},
                              *opened),
            opened->bound[0] + ",tcp://hub:5558");
}

TEST(Socket, AddressInUseIsUnavailable) {
  zmq::context_t context(1);
  auto first = OpenSocket(context, zmq::socket_type::pull,
                          {{Role::kBind, "tcp://127.0.0.1:*"}}, {});
  ASSERT_TRUE(first.ok());
  auto second = OpenSocket(context, zmq::socket_type::pull,
                           {{Role::kBind, first->bound[0]}}, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(first->bound[0]), std::string::npos);
}

TEST(Socket, ReceiversSetTwiceTheDecodeLimitAsMaxMessageSize) {
  zmq::context_t context(1);
  SocketOptions options;
  options.max_frame_bytes = 1000;
  options.hwm = 7;
  auto pull = OpenSocket(context, zmq::socket_type::pull, {}, options);
  ASSERT_TRUE(pull.ok());
  EXPECT_EQ(pull->socket.get(zmq::sockopt::maxmsgsize), 2000);
  EXPECT_EQ(pull->socket.get(zmq::sockopt::rcvhwm), 7);
  auto push = OpenSocket(context, zmq::socket_type::push, {}, options);
  ASSERT_TRUE(push.ok());
  EXPECT_EQ(push->socket.get(zmq::sockopt::sndhwm), 7);
  EXPECT_EQ(push->socket.get(zmq::sockopt::immediate), 1);
  EXPECT_EQ(push->socket.get(zmq::sockopt::linger), options.linger_ms);
}

// Issue 11, point 2: every socket pings its peers, and drops one silent
// for five intervals (and asks the peer to do the same); 0 turns it off.
TEST(Socket, EveryConnectionIsPingedAndASilentPeerDroppedAfterFiveIntervals) {
  zmq::context_t context(1);
  SocketOptions options;
  options.heartbeat_ms = 700;
  for (auto type : {zmq::socket_type::push, zmq::socket_type::pull,
                    zmq::socket_type::xpub, zmq::socket_type::sub}) {
    auto s = OpenSocket(context, type, {}, options);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->socket.get(zmq::sockopt::heartbeat_ivl), 700);
    EXPECT_EQ(s->socket.get(zmq::sockopt::heartbeat_timeout), 3500);
    EXPECT_EQ(s->socket.get(zmq::sockopt::heartbeat_ttl), 3500);
  }
  options.heartbeat_ms = 0;
  auto off = OpenSocket(context, zmq::socket_type::push, {}, options);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->socket.get(zmq::sockopt::heartbeat_ivl), 0);
}

TEST(Socket, WaitForPeersReturnsOnceThatManyHaveConnected) {
  zmq::context_t context(1);
  SocketOptions options;
  options.monitor_peers = true;
  auto push = OpenSocket(context, zmq::socket_type::push,
                         {{Role::kBind, "tcp://127.0.0.1:*"}}, options);
  ASSERT_TRUE(push.ok());
  std::vector<zmq::socket_t> peers;
  for (int i = 0; i < 2; ++i) {
    peers.emplace_back(context, zmq::socket_type::pull);
    peers.back().connect(push->bound[0]);
  }
  auto waited = WaitForPeers(*push, 2, -1, std::chrono::seconds(20));
  ASSERT_TRUE(waited.ok());
  EXPECT_EQ(*waited, WaitOutcome::kReady);
}

TEST(Socket, WaitForPeersTimesOutWhenNobodyComes) {
  zmq::context_t context(1);
  SocketOptions options;
  options.monitor_peers = true;
  auto push = OpenSocket(context, zmq::socket_type::push,
                         {{Role::kBind, "tcp://127.0.0.1:*"}}, options);
  ASSERT_TRUE(push.ok());
  auto waited = WaitForPeers(*push, 1, -1, std::chrono::milliseconds(100));
  ASSERT_TRUE(waited.ok());
  EXPECT_EQ(*waited, WaitOutcome::kTimedOut);
}

TEST(Socket, ReceiveFrameWakesOnTheStopFd) {
  zmq::context_t context(1);
  auto pull = OpenSocket(context, zmq::socket_type::pull,
                         {{Role::kBind, "inproc://stop-test"}}, {});
  ASSERT_TRUE(pull.ok());
  StopSignal stop;
  std::thread stopper([&] { stop.Request(); });
  zmq::message_t frame;
  auto got = ReceiveFrame(pull->socket, stop.fd(), std::nullopt, frame);
  stopper.join();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, WaitOutcome::kStopped);
}

}  // namespace
}  // namespace sluice
