// Issue 21: a dead peer was logged as "handshake.refused ... a server that
// requires CURVE does that to a plain client". A connection that closes
// during the handshake says nothing about why; the log line now says what
// the socket saw at that address before, or else the likeliest causes in
// order, a peer stopping or gone first.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

// Accepts every TCP connection on 127.0.0.1:`port` (0: ephemeral) and closes
// it at once, as a proxy or port forward does for a peer that is not there.
class AcceptAndClose {
 public:
  explicit AcceptAndClose(uint16_t port = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    bound_ = bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
             listen(fd_, 64) == 0;
    socklen_t length = sizeof(address);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        const int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) return;  // shutdown() by the destructor.
        close(client);
      }
    });
  }
  ~AcceptAndClose() {
    shutdown(fd_, SHUT_RDWR);  // Wakes accept().
    thread_.join();
    close(fd_);
  }
  bool bound() const { return bound_; }
  std::string address() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  bool bound_ = false;
  uint16_t port_ = 0;
  std::thread thread_;
};

bool Logged(Process& p, const std::string& text) {
  return p.WaitForOutput(
      [&](const std::string&, const std::string& err) {
        return err.find(text) != std::string::npos;
      },
      std::chrono::seconds(30));
}

TEST(DeadPeer, ConnectionClosedInTheHandshakeIsExplainedAsAPeerStoppingOrGoneFirst) {
  AcceptAndClose proxy;
  ASSERT_TRUE(proxy.bound());
  auto producer = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*", "--count", "10",
                                            "--acks", ">" + proxy.address()});
  producer->WaitReady();
  ASSERT_TRUE(Logged(*producer, "handshake.refused: acks " + proxy.address())) << producer->err();
  const std::string err = producer->err();
  EXPECT_NE(err.find("no ZeroMQ peer answered there. Either the peer is stopping or gone"),
            std::string::npos)
      << err;
  // The old line blamed CURVE alone.
  EXPECT_EQ(err.find("a server that requires CURVE does that"), std::string::npos) << err;
  producer->Signal(SIGTERM);
  EXPECT_EQ(producer->Wait(std::chrono::seconds(30)), 0) << producer->err();
}

TEST(DeadPeer, PeerThatWasConnectedAndThenFailsTheHandshakeIsSaidToBeRestarting) {
  // The sink's ack socket, played by the test: the producer connects and
  // subscribes, and waits for an answer to its hello.
  std::optional<zmq::context_t> context(std::in_place, 1);
  std::optional<zmq::socket_t> acks(std::in_place, *context, zmq::socket_type::xpub);
  acks->set(zmq::sockopt::linger, 0);
  acks->set(zmq::sockopt::rcvtimeo, 20000);
  acks->bind("tcp://127.0.0.1:*");
  const std::string address = acks->get(zmq::sockopt::last_endpoint);
  auto producer = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*", "--count", "10",
                                            "--acks", ">" + address});
  producer->WaitReady();
  zmq::message_t subscription;
  ASSERT_TRUE(acks->recv(subscription, zmq::recv_flags::none));  // Connected.
  // The peer goes; what now listens at its port closes every connection.
  acks.reset();
  context.reset();
  AcceptAndClose proxy(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  ASSERT_TRUE(proxy.bound());
  ASSERT_TRUE(Logged(*producer, "handshake.refused: acks " + address)) << producer->err();
  const std::string err = producer->err();
  EXPECT_NE(err.find("the peer, connected before, is stopping or restarting"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("CURVE"), std::string::npos) << err;
  producer->Signal(SIGTERM);
  EXPECT_TRUE(producer->Wait(std::chrono::seconds(30)).has_value()) << producer->err();
}

}  // namespace
}  // namespace sluice::testing
