#include "common/handshake_watch.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "common/log.h"
#include "common/thread.h"

namespace sluice {
namespace {

constexpr int kEvents = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                        ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                        ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;

constexpr std::chrono::seconds kRepeatEvery{10};

void Signal(int fd) {
  const uint64_t one = 1;
  (void)!write(fd, &one, sizeof(one));
}

// What this socket saw before at the address of a failed handshake.
struct History {
  bool connected = false;  // A handshake there succeeded.
  bool mismatch = false;   // Plain met CURVE there.
};

// Why a handshake failed, as an operator would fix it; empty: logged
// elsewhere.
std::string Explain(const HandshakeWatch::SocketInfo& info, uint16_t event,
                    uint32_t value, const std::string& address, History history) {
  const std::string where = info.name + " " + address + ": ";
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      if (info.curve) {
        return where + (info.server
                            ? "a plain (unencrypted) client was refused: this socket "
                              "requires CURVE; give that peer --curve-secret and "
                              "--curve-server"
                            : "the server is plain (unencrypted) and this socket "
                              "requires CURVE: refused; start that peer with "
                              "--curve-secret");
      }
      return where + (info.server
                          ? "a CURVE client was refused: this socket is plain; "
                            "start this process with --curve-secret (and "
                            "--curve-allow)"
                          : "the server requires CURVE and this socket is plain: "
                            "refused; start this process with --curve-secret and "
                            "--curve-server");
    }
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) {
      return where + "a CURVE handshake could not be decrypted: the peer holds "
             "another key than this side expects (check --curve-server against "
             "the server's --curve-secret)";
    }
    char code[16];
    std::snprintf(code, sizeof(code), "0x%08x", value);
    return where + "the handshake broke the protocol (libzmq error " + code +
           "): refused";
  }
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
    if (info.server) return "";  // The ZAP handler logs the key and address.
    return where + "the server refused this process's CURVE key " +
           info.public_key + " (status " + std::to_string(value) +
           "): add its .pub to the server's --curve-allow";
  }
  // No detail: the connection closed (or was reset) during the handshake.
  // libzmq does not say why, and the causes look alike from here: a peer
  // that is stopping, a proxy or port forward that accepts for a peer that
  // is not there, a program that is not ZeroMQ, or the other side refusing
  // a plain/CURVE mismatch before this side read its greeting. What this
  // socket saw at the address before narrows it down.
  const std::string error = std::strerror(static_cast<int>(value));
  if (info.server) {
    return where + "a client closed the connection during the handshake (" + error +
           (info.curve ? "): a plain client, or one that expects another server key "
                         "(its --curve-server), does that, as do a client that is "
                         "stopping and a port probe"
                       : "): a CURVE client does that to a plain socket (start this "
                         "process with --curve-secret), as do a client that is "
                         "stopping and a port probe");
  }
  const std::string closed = where + "the connection closed during the handshake (" +
                             error + "): ";
  if (history.mismatch) {
    return closed + (info.curve
                         ? "the server is plain (unencrypted), as an earlier attempt "
                           "showed; start that peer with --curve-secret"
                         : "the server requires CURVE, as an earlier attempt showed; "
                           "start this process with --curve-secret and --curve-server");
  }
  if (history.connected) {
    return closed + "the peer, connected before, is stopping or restarting; this "
                    "socket reconnects when it is back";
  }
  return closed + "no ZeroMQ peer answered there. Either the peer is stopping or "
                  "gone (a proxy or port forward, such as Docker's, accepts for a "
                  "peer that is not running), or another program holds the port, or " +
         (info.curve ? std::string("the server is plain or holds another key than "
                                   "--curve-server")
                     : std::string("the server requires CURVE (then start this "
                                   "process with --curve-secret and --curve-server)"));
}

}  // namespace

struct HandshakeWatch::Watched {
  zmq::socket_t monitor;  // Used by the thread once it is in its list.
  SocketInfo info;
  // The thread's: peers past the handshake, and connections that failed
  // it whose disconnect is still to come.
  int peers_now = 0;
  int failed_open = 0;
  std::atomic<int> peers{0};
  std::map<uint32_t, std::unique_ptr<RateLimitedLog>> logs;  // By kind.
  // The thread's: by address (the peer's, for a socket that connects),
  // what earlier handshakes there showed. Bounded by the endpoints a
  // connecting socket has; a bound socket's events all carry its own
  // address.
  std::map<std::string, History> history;
};

HandshakeWatch::HandshakeWatch(zmq::context_t& context, Counter& failed)
    : context_(context), failed_(failed) {}

StatusOr<std::unique_ptr<HandshakeWatch>> HandshakeWatch::Start(
    zmq::context_t& context, Counter& failed) {
  std::unique_ptr<HandshakeWatch> watch(new HandshakeWatch(context, failed));
  for (int* fd : {&watch->stop_fd_, &watch->added_fd_, &watch->changed_fd_}) {
    *fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (*fd < 0) return Internal(std::string("handshake watch: eventfd: ") + std::strerror(errno));
  }
  auto thread = StartThread("handshakes", [w = watch.get()] { w->Serve(); });
  if (!thread.ok()) return thread.status();
  watch->thread_ = std::move(*thread);
  return watch;
}

HandshakeWatch::~HandshakeWatch() {
  if (thread_.joinable()) {
    Signal(stop_fd_);
    thread_.join();
  }
  for (int fd : {stop_fd_, added_fd_, changed_fd_}) {
    if (fd >= 0) close(fd);
  }
}

StatusOr<int> HandshakeWatch::Watch(zmq::socket_t& socket, SocketInfo info) {
  static std::atomic<int> next_address{0};
  const std::string address = "inproc://sluice-handshakes-" + std::to_string(next_address++);
  auto watched = std::make_unique<Watched>();
  watched->info = std::move(info);
  try {
    if (zmq_socket_monitor(socket.handle(), address.c_str(), kEvents) != 0) {
      throw zmq::error_t();
    }
    watched->monitor = zmq::socket_t(context_, zmq::socket_type::pair);
    watched->monitor.set(zmq::sockopt::linger, 0);
    watched->monitor.connect(address);
  } catch (const zmq::error_t& e) {
    return Internal(std::string("handshake watch: ") + e.what());
  }
  int id;
  {
    // The mutex is the full barrier libzmq asks for when a socket moves
    // to another thread.
    std::lock_guard<std::mutex> lock(mu_);
    id = static_cast<int>(all_.size());
    pending_.push_back(watched.get());
    all_.push_back(std::move(watched));
  }
  Signal(added_fd_);
  return id;
}

int HandshakeWatch::Peers(int id) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (id < 0 || static_cast<size_t>(id) >= all_.size()) return 0;
  return all_[static_cast<size_t>(id)]->peers.load();
}

void HandshakeWatch::OnEvent(Watched& watched, uint16_t event, uint32_t value,
                             const std::string& address) {
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
      ++watched.peers_now;
      watched.history[address].connected = true;
      break;
    case ZMQ_EVENT_DISCONNECTED:
      // The close of a connection whose handshake failed, or of a peer.
      if (watched.failed_open > 0) {
        --watched.failed_open;
      } else if (watched.peers_now > 0) {
        --watched.peers_now;
        // A peer that left, or that liveness (--heartbeat-ms) dropped.
        spdlog::info("peer.lost {} {}: a connected peer closed or fell silent "
                     "({} still connected)",
                     watched.info.name, address, watched.peers_now);
      }
      break;
    default: {  // A failed handshake.
      ++watched.failed_open;
      failed_.Add();
      Signal(changed_fd_);
      History& history = watched.history[address];
      const std::string why = Explain(watched.info, event, value, address, history);
      if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
          value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
        history.mismatch = true;
      }
      if (why.empty()) {
        spdlog::debug("{} {}: a handshake failed: event {:#x}, value {}",
                      watched.info.name, address, event, value);
        break;
      }
      const uint32_t kind = (uint32_t{event} << 16) ^ value;
      auto& log = watched.logs[kind];
      if (!log) log = std::make_unique<RateLimitedLog>("handshake.refused", kRepeatEvery);
      log->Warn(why);
    }
  }
  if (watched.peers.exchange(watched.peers_now) != watched.peers_now) Signal(changed_fd_);
}

void HandshakeWatch::Serve() {
  std::vector<Watched*> mine;
  std::vector<zmq::pollitem_t> items;
  try {
    while (true) {
      items.clear();
      items.push_back({nullptr, stop_fd_, ZMQ_POLLIN, 0});
      items.push_back({nullptr, added_fd_, ZMQ_POLLIN, 0});
      for (Watched* w : mine) items.push_back({w->monitor.handle(), 0, ZMQ_POLLIN, 0});
      try {
        zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (items[0].revents & ZMQ_POLLIN) break;
      if (items[1].revents & ZMQ_POLLIN) {
        uint64_t n;
        (void)!read(added_fd_, &n, sizeof(n));
        std::lock_guard<std::mutex> lock(mu_);
        mine.insert(mine.end(), pending_.begin(), pending_.end());
        pending_.clear();
      }
      for (size_t i = 2; i < items.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        Watched& w = *mine[i - 2];
        // An event: 16-bit id and 32-bit value, then the address frame.
        zmq::message_t event, address;
        while (w.monitor.recv(event, zmq::recv_flags::dontwait)) {
          if (event.more()) (void)w.monitor.recv(address, zmq::recv_flags::none);
          if (event.size() < 6) continue;
          uint16_t id;
          uint32_t value;
          std::memcpy(&id, event.data(), sizeof(id));
          std::memcpy(&value, event.data<char>() + 2, sizeof(value));
          OnEvent(w, id, value, address.to_string());
        }
      }
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != ETERM) spdlog::error("handshake watch stopped: {}", e.what());
  }
  for (Watched* w : mine) w->monitor.close();
}

}  // namespace sluice
