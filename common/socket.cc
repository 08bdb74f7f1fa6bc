#include "common/socket.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <poll.h>
#include <unistd.h>

#include "common/log.h"

namespace sluice {
namespace {

Status FromZmqError(const zmq::error_t& e, const std::string& what) {
  switch (e.num()) {
    case EADDRINUSE:
    case EADDRNOTAVAIL:
    case ENODEV:
    case EHOSTUNREACH:
      return Unavailable(what + ": " + e.what());
    case EINVAL:
    case ENAMETOOLONG:
    case EPROTONOSUPPORT:
    case ENOCOMPATPROTO:
      return InvalidArgument(what + ": " + e.what());
    default:
      return Internal(what + ": " + e.what());
  }
}

int PollTimeoutMs(std::optional<std::chrono::steady_clock::time_point> deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      *deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits until `socket` has `events` or stop_fd is readable.
StatusOr<WaitOutcome> Wait(
    zmq::socket_t& socket, short events, int stop_fd,
    std::optional<std::chrono::steady_clock::time_point> deadline) {
  zmq::pollitem_t items[2] = {
      {socket.handle(), 0, events, 0},
      {nullptr, stop_fd, ZMQ_POLLIN, 0},
  };
  int count = stop_fd >= 0 ? 2 : 1;
  try {
    while (true) {
      int timeout = PollTimeoutMs(deadline);
      int n = 0;
      try {
        n = zmq::poll(items, count, std::chrono::milliseconds(timeout));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;  // A signal; its handler has set stop_fd if it matters.
      }
      if (count == 2 && (items[1].revents & ZMQ_POLLIN)) {
        return WaitOutcome::kStopped;
      }
      if (items[0].revents & events) return WaitOutcome::kReady;
      if (n == 0 && deadline) return WaitOutcome::kTimedOut;
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM) return WaitOutcome::kStopped;
    return FromZmqError(e, "poll");
  }
}

}  // namespace

StatusOr<ContextGuards> ContextGuards::Start(zmq::context_t& context,
                                             const SocketOptions& base,
                                             Counter& curve_refused,
                                             Counter& handshake_failed) {
  ContextGuards guards;
  guards.base_ = base;
  auto zap = ZapHandler::Start(context, base.curve, curve_refused);
  if (!zap.ok()) return zap.status();
  guards.zap_ = std::move(*zap);
  auto watch = HandshakeWatch::Start(context, handshake_failed);
  if (!watch.ok()) return watch.status();
  guards.watch_ = std::move(*watch);
  return guards;
}

SocketOptions ContextGuards::For(const std::string& name) const {
  SocketOptions options = base_;
  options.watch = watch_.get();
  options.name = name;
  return options;
}

void ContextGuards::Stop() {
  watch_.reset();
  zap_.reset();
}

StatusOr<OpenedSocket> OpenSocket(zmq::context_t& context,
                                  zmq::socket_type type,
                                  const std::vector<Endpoint>& endpoints,
                                  const SocketOptions& options) {
  OpenedSocket opened;
  try {
    opened.socket = zmq::socket_t(context, type);
    zmq::socket_t& s = opened.socket;
    s.set(zmq::sockopt::linger, options.linger_ms);
    const bool curve = options.curve != nullptr && options.curve->enabled();
    if (options.heartbeat_ms > 0) {
      // Liveness is TCP's own, not ZMTP's PING/PONG: libzmq 4.3.4 (Debian
      // bookworm's) aborts the process in its heartbeat timer when a
      // connection's input had stopped (a full pipe) and then failed --
      // exactly what a peer frozen for a few seconds causes
      // (stream_engine_base.cpp, `!_io_error`). Keepalive probes find a
      // vanished host on an idle connection; TCP_USER_TIMEOUT (ZMQ_TCP_MAXRT)
      // drops one whose data, or whose zero window, has gone unanswered for
      // as long. The kernel answers both, so no peer input and no scheduler
      // pause can reach an assert.
      const int probe_s = std::max(1, (options.heartbeat_ms + 999) / 1000);
      s.set(zmq::sockopt::tcp_keepalive, 1);
      s.set(zmq::sockopt::tcp_keepalive_idle, probe_s);
      s.set(zmq::sockopt::tcp_keepalive_intvl, probe_s);
      s.set(zmq::sockopt::tcp_keepalive_cnt, kLivenessProbes);
      s.set(zmq::sockopt::tcp_maxrt, kLivenessProbes * options.heartbeat_ms);
    }
    if (type == zmq::socket_type::push) {
      s.set(zmq::sockopt::sndhwm, options.hwm);
      s.set(zmq::sockopt::immediate, 1);
    } else if (type == zmq::socket_type::pub ||
               type == zmq::socket_type::xpub) {
      s.set(zmq::sockopt::sndhwm, options.hwm);
      if (type == zmq::socket_type::xpub) {
        // Subscriptions are peer input: small, and applied only once the
        // owner has checked them (XPUB_MANUAL).
        s.set(zmq::sockopt::xpub_verbose, 1);
        s.set(zmq::sockopt::xpub_manual, 1);
        // CURVE's handshake commands pass the same limit (INITIATE is
        // about 300 bytes): allow them, subscriptions are checked anyway.
        s.set(zmq::sockopt::maxmsgsize, int64_t{curve ? 1024 : kMaxSubscriptionBytes});
      }
    } else {
      s.set(zmq::sockopt::rcvhwm, options.hwm);
      s.set(zmq::sockopt::maxmsgsize,
            static_cast<int64_t>(options.max_frame_bytes) * 2);
    }
    if (curve) {
      bool binds = false, connects = false;
      for (const Endpoint& e : endpoints) {
        (e.role == Role::kBind ? binds : connects) = true;
      }
      if (binds && connects) {
        return InvalidArgument(
            "CURVE: one socket cannot both bind and connect (it is either a "
            "server or a client); split the endpoints");
      }
      if (Status c = ApplyCurve(s, *options.curve, binds); !c.ok()) return c;
    }
    if (options.watch != nullptr) {
      bool server = false;
      for (const Endpoint& e : endpoints) server = server || e.role == Role::kBind;
      StatusOr<int> id = options.watch->Watch(
          s, {.name = options.name,
              .curve = curve,
              .server = server,
              .public_key = curve ? options.curve->public_key : std::string()});
      if (!id.ok()) return id.status();
      opened.watch_id = *id;
    }
  } catch (const zmq::error_t& e) {
    return FromZmqError(e, "socket setup");
  }
  for (const Endpoint& endpoint : endpoints) {
    try {
      if (endpoint.role == Role::kBind) {
        opened.socket.bind(endpoint.address);
        opened.bound.push_back(
            opened.socket.get(zmq::sockopt::last_endpoint));
      } else {
        opened.socket.connect(endpoint.address);
      }
    } catch (const zmq::error_t& e) {
      return FromZmqError(e, (endpoint.role == Role::kBind ? "bind " : "connect ") +
                                 endpoint.address);
    }
  }
  return opened;
}

std::string DescribeAddresses(const std::vector<Endpoint>& endpoints,
                              const OpenedSocket& opened) {
  std::string out;
  for (const std::string& bound : opened.bound) {
    out += (out.empty() ? "" : ",") + bound;
  }
  for (const Endpoint& e : endpoints) {
    if (e.role == Role::kConnect) out += (out.empty() ? "" : ",") + e.address;
  }
  return out;
}

StatusOr<WaitOutcome> ReceiveFrame(
    zmq::socket_t& socket, int stop_fd,
    std::optional<std::chrono::milliseconds> timeout, zmq::message_t& frame) {
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (timeout) deadline = std::chrono::steady_clock::now() + *timeout;
  try {
    // Fast path: a frame is already queued.
    if (socket.recv(frame, zmq::recv_flags::dontwait)) {
      return WaitOutcome::kReady;
    }
    while (true) {
      StatusOr<WaitOutcome> waited = Wait(socket, ZMQ_POLLIN, stop_fd, deadline);
      if (!waited.ok() || *waited != WaitOutcome::kReady) return waited;
      if (socket.recv(frame, zmq::recv_flags::dontwait)) {
        return WaitOutcome::kReady;
      }
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM) return WaitOutcome::kStopped;
    return FromZmqError(e, "receive");
  }
}

StatusOr<WaitOutcome> SendFrame(
    zmq::socket_t& socket, zmq::message_t& frame, int stop_fd,
    std::optional<std::chrono::steady_clock::time_point> deadline,
    std::chrono::nanoseconds* blocked) {
  std::optional<std::chrono::steady_clock::time_point> since;
  auto note_blocked = [&] {
    if (blocked != nullptr && since) *blocked += std::chrono::steady_clock::now() - *since;
  };
  try {
    while (true) {
      if (socket.send(frame, zmq::send_flags::dontwait)) {
        note_blocked();
        return WaitOutcome::kReady;
      }
      if (!since && blocked != nullptr) since = std::chrono::steady_clock::now();
      StatusOr<WaitOutcome> waited = Wait(socket, ZMQ_POLLOUT, stop_fd, deadline);
      if (!waited.ok() || *waited != WaitOutcome::kReady) {
        note_blocked();
        return waited;
      }
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM) return WaitOutcome::kStopped;
    return FromZmqError(e, "send");
  }
}

StatusOr<WaitOutcome> WaitForPeers(
    OpenedSocket& opened, HandshakeWatch& watch, int peers, int stop_fd,
    std::optional<std::chrono::milliseconds> timeout) {
  auto next_log = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> give_up;
  if (timeout) give_up = next_log + *timeout;
  int connected = 0;
  while ((connected = watch.Peers(opened.watch_id)) < peers) {
    const auto now = std::chrono::steady_clock::now();
    if (give_up && now >= *give_up) return WaitOutcome::kTimedOut;
    if (now >= next_log) {
      spdlog::info("waiting for {} peers to connect, {} so far", peers, connected);
      next_log += std::chrono::seconds(5);
    }
    const auto until = give_up ? std::min(next_log, *give_up) : next_log;
    pollfd fds[2] = {{watch.changed_fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    const int n = poll(fds, stop_fd >= 0 ? 2 : 1, PollTimeoutMs(until));
    if (n < 0 && errno != EINTR) return Internal(std::string("poll: ") + std::strerror(errno));
    if (stop_fd >= 0 && (fds[1].revents & POLLIN)) return WaitOutcome::kStopped;
    if (fds[0].revents & POLLIN) {
      uint64_t changes;
      (void)!read(watch.changed_fd(), &changes, sizeof(changes));
    }
  }
  try {
    // The pipes of those peers wait in the socket's command queue; take
    // them in now, so that the first frame already goes round all of them.
    (void)opened.socket.get(zmq::sockopt::events);
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM) return WaitOutcome::kStopped;
    return FromZmqError(e, "socket events");
  }
  spdlog::info("{} peers connected", connected);
  return WaitOutcome::kReady;
}

bool TerminateContext(zmq::context_t& context, int linger_ms) {
  auto start = std::chrono::steady_clock::now();
  context.close();
  auto took = std::chrono::steady_clock::now() - start;
  return linger_ms < 0 || took < std::chrono::milliseconds(linger_ms);
}

}  // namespace sluice
