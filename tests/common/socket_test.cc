#include "common/socket.h"

#include <poll.h>
#include <unistd.h>

#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "common/curve.h"
#include "common/handshake_watch.h"
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
  opened->socket.set(zmq::sockopt::rcvtimeo, 10000);
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

// Issue 11, point 2, and issue 21, point 1: liveness is TCP's. A peer that
// takes none of our data for 5 x --heartbeat-ms (a frozen process, a host
// gone with our data on the wire) is disconnected, so that PUSH stops
// feeding it; the peer here is a PULL socket that never reads, with a tiny
// receive buffer: its window shuts and stays shut.
TEST(Socket, APeerThatTakesNoDataForFiveIntervalsIsDisconnected) {
  zmq::context_t context(1), peer_context(1);
  SocketOptions options;
  options.heartbeat_ms = 200;  // Dropped after 1 s of a shut window.
  options.hwm = 4;
  options.linger_ms = 0;
  auto push = OpenSocket(context, zmq::socket_type::push, {}, options);
  ASSERT_TRUE(push.ok());
  struct Events : zmq::monitor_t {
    int connected = 0, disconnected = 0;
    void on_event_handshake_succeeded(const zmq_event_t&, const char*) override {
      ++connected;
    }
    void on_event_disconnected(const zmq_event_t&, const char*) override {
      ++disconnected;
    }
  };
  Events events;
  events.init(push->socket, "inproc://liveness-events",
              ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED);
  push->socket.bind("tcp://127.0.0.1:*");
  zmq::socket_t peer(peer_context, zmq::socket_type::pull);
  peer.set(zmq::sockopt::linger, 0);
  peer.set(zmq::sockopt::rcvhwm, 1);
  peer.set(zmq::sockopt::rcvbuf, 4096);
  peer.connect(push->socket.get(zmq::sockopt::last_endpoint));
  const std::string chunk(256 * 1024, 'x');
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (events.disconnected == 0 && std::chrono::steady_clock::now() < deadline) {
    if (events.connected > 0) {
      // Keep data queued for the peer: it never takes it.
      (void)push->socket.send(zmq::buffer(chunk), zmq::send_flags::dontwait);
    }
    events.check_event(100);
  }
  EXPECT_EQ(events.connected, 1);
  EXPECT_EQ(events.disconnected, 1) << "a peer that took no data for 30 s is still connected";
}

// --peers: once WaitForPeers says N peers are there, the first N frames go
// one to each of them (the even start), however fast they are sent.
TEST(Socket, WaitForPeersReturnsOnceThatManyHaveConnectedAndEachGetsAFrame) {
  constexpr int kPeers = 8;
  for (int round = 0; round < 20; ++round) {
    zmq::context_t context(1);
    Counter failed;
    auto watch = HandshakeWatch::Start(context, failed);
    ASSERT_TRUE(watch.ok());
    SocketOptions options;
    options.watch = watch->get();
    auto push = OpenSocket(context, zmq::socket_type::push,
                           {{Role::kBind, "tcp://127.0.0.1:*"}}, options);
    ASSERT_TRUE(push.ok());
    std::vector<zmq::socket_t> peers;
    for (int i = 0; i < kPeers; ++i) {
      peers.emplace_back(context, zmq::socket_type::pull);
      peers.back().set(zmq::sockopt::linger, 0);
      peers.back().connect(push->bound[0]);
    }
    auto waited = WaitForPeers(*push, **watch, kPeers, -1, std::chrono::seconds(20));
    ASSERT_TRUE(waited.ok());
    ASSERT_EQ(*waited, WaitOutcome::kReady);
    for (int i = 0; i < kPeers; ++i) {
      ASSERT_TRUE(push->socket.send(zmq::str_buffer("x"), zmq::send_flags::dontwait));
    }
    for (int i = 0; i < kPeers; ++i) {
      peers[i].set(zmq::sockopt::rcvtimeo, 10000);
      zmq::message_t got;
      EXPECT_TRUE(peers[i].recv(got)) << "peer " << i << " got no frame, round " << round;
    }
    push->socket.set(zmq::sockopt::linger, 0);
    EXPECT_EQ(failed.value(), 0u);
  }
}

TEST(Socket, WaitForPeersTimesOutWhenNobodyComes) {
  zmq::context_t context(1);
  Counter failed;
  auto watch = HandshakeWatch::Start(context, failed);
  ASSERT_TRUE(watch.ok());
  SocketOptions options;
  options.watch = watch->get();
  auto push = OpenSocket(context, zmq::socket_type::push,
                         {{Role::kBind, "tcp://127.0.0.1:*"}}, options);
  ASSERT_TRUE(push.ok());
  auto waited = WaitForPeers(*push, **watch, 1, -1, std::chrono::milliseconds(100));
  ASSERT_TRUE(waited.ok());
  EXPECT_EQ(*waited, WaitOutcome::kTimedOut);
}

// A peer whose handshake fails is counted and is not a peer: a plain
// client knocking on a CURVE socket neither completes --peers nor lowers
// the tally of the good ones when it is turned away.
TEST(Socket, FailedHandshakesAreCountedOnBothSidesAndAreNotPeers) {
  char public_key[41], secret_key[41];
  ASSERT_EQ(zmq_curve_keypair(public_key, secret_key), 0);
  auto curve = std::make_shared<CurveConfig>();
  curve->secret = secret_key;
  curve->public_key = public_key;
  curve->server_public = public_key;
  zmq::context_t server_context(1), client_context(1);
  Counter server_failed, client_failed, refused;
  auto zap = ZapHandler::Start(server_context, curve, refused);
  ASSERT_TRUE(zap.ok());
  auto server_watch = HandshakeWatch::Start(server_context, server_failed);
  auto client_watch = HandshakeWatch::Start(client_context, client_failed);
  ASSERT_TRUE(server_watch.ok() && client_watch.ok());
  SocketOptions server_options;
  server_options.curve = curve;
  server_options.watch = server_watch->get();
  server_options.name = "out";
  auto push = OpenSocket(server_context, zmq::socket_type::push,
                         {{Role::kBind, "tcp://127.0.0.1:*"}}, server_options);
  ASSERT_TRUE(push.ok());
  // A plain client: refused (it may retry, or give up for good when it
  // sees the mismatch itself, which libzmq treats as a protocol error).
  SocketOptions plain_options;
  plain_options.watch = client_watch->get();
  plain_options.name = "in";
  auto plain = OpenSocket(client_context, zmq::socket_type::pull,
                          {{Role::kConnect, push->bound[0]}}, plain_options);
  ASSERT_TRUE(plain.ok());
  // Waits (up to 20 s) on both watches' change signals until `done`.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto wait_until = [&](auto done) {
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      pollfd fds[2] = {{(*server_watch)->changed_fd(), POLLIN, 0},
                       {(*client_watch)->changed_fd(), POLLIN, 0}};
      (void)poll(fds, 2, 1000);
      uint64_t n;
      for (const pollfd& fd : fds) {
        if (fd.revents & POLLIN) (void)!read(fd.fd, &n, sizeof(n));
      }
    }
  };
  wait_until([&] { return server_failed.value() >= 1 && client_failed.value() >= 1; });
  EXPECT_GE(server_failed.value(), 1u);
  EXPECT_GE(client_failed.value(), 1u);
  EXPECT_EQ(refused.value(), 0u);  // Turned away before any key was shown.
  EXPECT_EQ((*server_watch)->Peers(push->watch_id), 0);
  EXPECT_EQ((*client_watch)->Peers(plain->watch_id), 0);
  // A CURVE client is a peer; plain ones refused after it do not lower
  // the tally.
  SocketOptions good_options;
  good_options.curve = curve;
  auto good = OpenSocket(client_context, zmq::socket_type::pull,
                         {{Role::kConnect, push->bound[0]}}, good_options);
  ASSERT_TRUE(good.ok());
  auto waited = WaitForPeers(*push, **server_watch, 1, -1, std::chrono::seconds(20));
  ASSERT_TRUE(waited.ok());
  EXPECT_EQ(*waited, WaitOutcome::kReady);
  const uint64_t failed_before = server_failed.value();
  std::vector<zmq::socket_t> intruders;
  for (int i = 0; i < 3; ++i) {
    intruders.emplace_back(client_context, zmq::socket_type::pull);
    intruders.back().set(zmq::sockopt::linger, 0);
    intruders.back().connect(push->bound[0]);
  }
  wait_until([&] { return server_failed.value() >= failed_before + 3; });
  EXPECT_GE(server_failed.value(), failed_before + 3);
  EXPECT_EQ((*server_watch)->Peers(push->watch_id), 1);
  ASSERT_TRUE(push->socket.send(zmq::str_buffer("secret"), zmq::send_flags::dontwait));
  good->socket.set(zmq::sockopt::rcvtimeo, 10000);
  zmq::message_t got;
  EXPECT_TRUE(good->socket.recv(got));
  plain->socket.set(zmq::sockopt::rcvtimeo, 0);
  EXPECT_FALSE(plain->socket.recv(got));
  push->socket.set(zmq::sockopt::linger, 0);
  for (auto* s : {&plain->socket, &good->socket}) s->set(zmq::sockopt::linger, 0);
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
