// common/socket.h
//
// The one place that calls cppzmq for Sluice's data path. Opens PUSH/PULL
// sockets with our defaults and turns cppzmq exceptions into Status.
//
// Defaults and why:
//  - send/receive high-water marks count *frames*; a frame holds up to a
//    batch of items, so hwm x batch bounds the items a socket buffers;
//  - receivers set ZMQ_MAXMSGSIZE to twice the decode limit: a frame a little
//    over the limit is received and counted as "too_large" by the codec; a
//    frame far over it makes libzmq drop the connection of the peer that sent
//    it before it is ever buffered in full (memory stays bounded);
//  - PUSH sockets set ZMQ_IMMEDIATE, so frames wait in our queue, not in a
//    pipe to a peer that never finished connecting;
//  - linger is bounded (SocketOptions::linger_ms);
//  - every TCP connection is watched for liveness (SocketOptions::
//    heartbeat_ms): TCP keepalive probes every heartbeat_ms (whole seconds,
//    at least 1) and TCP_USER_TIMEOUT of 5 x heartbeat_ms. A peer whose
//    host vanished, whose packets are dropped, or that takes no data at all
//    (frozen, window shut) for that long is disconnected. PUSH then stops
//    handing it frames, and what it held is replayed by the producer's
//    window, seconds after the fault rather than after TCP's
//    retransmissions give up (about 15 minutes on Linux). ZMTP heartbeats
//    are not used: libzmq 4.3.4 can abort in their timer (socket.cc).
//
// Thread safety: a socket is made, used and closed by one thread.
#ifndef SLUICE_COMMON_SOCKET_H_
#define SLUICE_COMMON_SOCKET_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "common/curve.h"
#include "common/endpoint.h"
#include "common/envelope_codec.h"
#include "common/handshake_watch.h"
#include "common/status.h"

namespace sluice {

// Largest subscription an XPUB socket takes: an ack topic or a hello (a
// stream id and a few bytes), with room to spare.
inline constexpr int kMaxSubscriptionBytes = 256;

// A peer silent for this many liveness intervals (--heartbeat-ms) is dropped.
inline constexpr int kLivenessProbes = 5;

struct SocketOptions {
  int hwm = 64;                                   // Frames, each direction.
  size_t max_frame_bytes = kDefaultMaxFrameBytes;  // Receivers' decode limit.
  int linger_ms = 5000;                           // Bounded linger on close.
  // Liveness: TCP keepalive probes every heartbeat_ms (rounded up to whole
  // seconds); a connection whose peer answers nothing, or takes none of
  // our data, for kLivenessProbes x heartbeat_ms is dropped. 0: off (TCP's
  // own timeouts, minutes).
  int heartbeat_ms = 1000;
  // Watch the socket's handshakes (log failures, tally peers for
  // WaitForPeers); set up before any bind/connect so that no early peer is
  // missed. `name` names the socket in log lines ("out", "acks").
  HandshakeWatch* watch = nullptr;
  std::string name;
  // CURVE (common/curve.h): a socket that binds is a server, one that
  // connects a client; null or disabled: plain.
  std::shared_ptr<const CurveConfig> curve;
};

struct OpenedSocket {
  zmq::socket_t socket;
  // The actual address of each bound endpoint (ephemeral ports resolved),
  // e.g. "tcp://127.0.0.1:41523", in the order given.
  std::vector<std::string> bound;
  // Its id in SocketOptions::watch, -1 if unwatched.
  int watch_id = -1;
};

// What a process's context needs before its first socket, and drops
// before it is terminated: the ZAP handler of CURVE's allow-list (none
// without CURVE) and the handshake watch. Stop() it, or destroy it, before
// TerminateContext.
class ContextGuards {
 public:
  // `base`: the binary's socket options (--curve-*, --hwm, ...); refusals
  // and failed handshakes are counted in the given counters.
  static StatusOr<ContextGuards> Start(zmq::context_t& context, const SocketOptions& base,
                                       Counter& curve_refused, Counter& handshake_failed);
  // `base` watched, naming the socket `name` ("in", "out", "acks") in logs.
  SocketOptions For(const std::string& name) const;
  HandshakeWatch& watch() { return *watch_; }
  void Stop();

 private:
  SocketOptions base_;
  std::unique_ptr<ZapHandler> zap_;
  std::unique_ptr<HandshakeWatch> watch_;
};

// Creates a socket of `type` (push/pub/xpub send, pull/sub receive; a sub
// socket is left unsubscribed; an xpub reports every subscription and
// applies none by itself: XPUB_MANUAL, its owner applies the ones it
// accepts), applies `options`, then binds or
// connects each endpoint. kUnavailable if an address cannot be bound (in use,
// no such interface), kInvalidArgument if libzmq rejects its syntax.
StatusOr<OpenedSocket> OpenSocket(zmq::context_t& context,
                                  zmq::socket_type type,
                                  const std::vector<Endpoint>& endpoints,
                                  const SocketOptions& options);

// For READY lines and logs: the bound addresses (ports resolved) followed by
// the connected ones, comma-separated: "tcp://0.0.0.0:5557,tcp://hub:5558".
std::string DescribeAddresses(const std::vector<Endpoint>& endpoints,
                              const OpenedSocket& opened);

enum class WaitOutcome { kReady, kStopped, kTimedOut };

// Blocks until at least `peers` peers have completed the ZeroMQ handshake
// with `opened` (opened with `watch`), logging progress every few seconds,
// or until `stop_fd` is readable (kStopped). This is the cure for PUSH's
// "slow joiner": the first peer to connect would otherwise get everything
// already queued. On kReady every one of those peers takes part in the
// socket's round-robin from the first frame on: libzmq hands a new peer's
// pipe to the socket before it reports the handshake, and the socket takes
// it in when it next processes its commands, which this forces.
// kTimedOut if `timeout` passes first.
StatusOr<WaitOutcome> WaitForPeers(
    OpenedSocket& opened, HandshakeWatch& watch, int peers, int stop_fd,
    std::optional<std::chrono::milliseconds> timeout = std::nullopt);

// Receives one frame into `frame`. Blocks until a frame arrives (kReady),
// `stop_fd` becomes readable (kStopped; pass -1 for none) or `timeout`
// passes (kTimedOut; nullopt waits forever).
StatusOr<WaitOutcome> ReceiveFrame(
    zmq::socket_t& socket, int stop_fd,
    std::optional<std::chrono::milliseconds> timeout, zmq::message_t& frame);

// Sends one frame, blocking while every peer is at its high-water mark (or
// none is connected). Gives up with kStopped when `stop_fd` becomes readable
// or kTimedOut at `deadline`; the frame is then still owned by the caller.
// If `blocked` is given, adds the time spent waiting to it (0 when the frame
// went at once: no clock is read then).
StatusOr<WaitOutcome> SendFrame(
    zmq::socket_t& socket, zmq::message_t& frame, int stop_fd,
    std::optional<std::chrono::steady_clock::time_point> deadline,
    std::chrono::nanoseconds* blocked = nullptr);

// Shuts `context` down once its sockets are closed; libzmq keeps flushing
// their queued frames for up to their linger. Returns false if the shutdown
// took the whole linger, i.e. frames were probably dropped undelivered.
bool TerminateContext(zmq::context_t& context, int linger_ms);

}  // namespace sluice

#endif  // SLUICE_COMMON_SOCKET_H_
