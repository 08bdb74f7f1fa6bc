#include "common/socket.h"

#include <algorithm>
#include <cerrno>

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

StatusOr<OpenedSocket> OpenSocket(zmq::context_t& context,
                                  zmq::socket_type type,
                                  const std::vector<Endpoint>& endpoints,
                                  const SocketOptions& options) {
  OpenedSocket opened;
  try {
    opened.socket = zmq::socket_t(context, type);
    zmq::socket_t& s = opened.socket;
    s.set(zmq::sockopt::linger, options.linger_ms);
    if (type == zmq::socket_type::push) {
      s.set(zmq::sockopt::sndhwm, options.hwm);
      s.set(zmq::sockopt::immediate, 1);
    } else {
      s.set(zmq::sockopt::rcvhwm, options.hwm);
      s.set(zmq::sockopt::maxmsgsize,
            static_cast<int64_t>(options.max_frame_bytes) * 2);
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
    std::optional<std::chrono::steady_clock::time_point> deadline) {
  try {
    while (true) {
      if (socket.send(frame, zmq::send_flags::dontwait)) {
        return WaitOutcome::kReady;
      }
      StatusOr<WaitOutcome> waited = Wait(socket, ZMQ_POLLOUT, stop_fd, deadline);
      if (!waited.ok() || *waited != WaitOutcome::kReady) return waited;
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == ETERM) return WaitOutcome::kStopped;
    return FromZmqError(e, "send");
  }
}

bool TerminateContext(zmq::context_t& context, int linger_ms) {
  auto start = std::chrono::steady_clock::now();
  context.close();
  auto took = std::chrono::steady_clock::now() - start;
  return linger_ms < 0 || took < std::chrono::milliseconds(linger_ms);
}

}  // namespace sluice
