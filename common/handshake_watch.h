// common/handshake_watch.h
//
// Watches the ZeroMQ handshakes of a process's sockets: one socket monitor
// per socket, read by one thread.
//
//  - A handshake that fails is counted (handshake_failed) and logged with
//    why, in words an operator can act on: a plain peer meeting a CURVE
//    socket or the reverse (both sides log it), a CURVE peer holding
//    another key than expected, a client key the server refused. A
//    connection that merely closes during the handshake says nothing about
//    why; it is explained from what the socket saw at that address before
//    (a peer that was connected is restarting, one that showed a
//    plain/CURVE mismatch still has it), and otherwise by its possible
//    causes, the likeliest first: a peer stopping or gone (a proxy or port
//    forward accepting for it), another program on the port, CURVE. The first
//    failure of a kind on a socket is logged at once; repeats (a client
//    reconnects every few hundred milliseconds) go out as one line with a
//    count at most every 10 s. A bound socket's monitor names its own
//    address, not the peer's: refused client keys are logged with the
//    peer's address by the ZAP handler (common/curve.h).
//  - The peers that completed the handshake and are still connected are
//    tallied per socket, for WaitForPeers (common/socket.h); one that goes
//    away (it closed, or liveness dropped it) is logged as peer.lost.
//
// A connection that fails its handshake reports the failure and then its
// disconnect, one right after the other (the contexts here have one I/O
// thread), so that disconnect is not taken for a peer leaving, and a
// failure never counts as a peer, not even for a moment.
//
// Thread safety: Watch() is called by a socket's own thread before it
// binds or connects; Peers() and changed_fd() from any thread. Destroy the
// watch before the context is terminated.
#ifndef SLUICE_COMMON_HANDSHAKE_WATCH_H_
#define SLUICE_COMMON_HANDSHAKE_WATCH_H_

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "common/counters.h"
#include "common/status.h"

namespace sluice {

class HandshakeWatch {
 public:
  // Starts the thread; `failed` counts every failed handshake.
  static StatusOr<std::unique_ptr<HandshakeWatch>> Start(zmq::context_t& context,
                                                         Counter& failed);
  ~HandshakeWatch();
  HandshakeWatch(const HandshakeWatch&) = delete;
  HandshakeWatch& operator=(const HandshakeWatch&) = delete;

  // What a log line needs to know about a socket.
  struct SocketInfo {
    std::string name;     // "out", "in", "acks": as the flags name it.
    bool curve = false;   // Set up for CURVE.
    bool server = false;  // Binds (a CURVE server) rather than connects.
    std::string public_key;  // This process's CURVE key, for the hint.
  };

  // Starts watching `socket`; call before it binds or connects. Returns
  // the id to pass to Peers().
  StatusOr<int> Watch(zmq::socket_t& socket, SocketInfo info);

  // Peers connected to socket `id` past the handshake, now.
  int Peers(int id) const;

  // An eventfd that becomes readable whenever a tally changes or a
  // handshake fails (read it to clear it).
  int changed_fd() const { return changed_fd_; }

 private:
  struct Watched;
  HandshakeWatch(zmq::context_t& context, Counter& failed);
  void Serve();
  void OnEvent(Watched& watched, uint16_t event, uint32_t value,
               const std::string& address);

  zmq::context_t& context_;
  Counter& failed_;
  int stop_fd_ = -1;     // Written by the destructor: the thread ends.
  int added_fd_ = -1;    // Written by Watch(): a socket joined `pending_`.
  int changed_fd_ = -1;  // Written by the thread: a tally changed.
  mutable std::mutex mu_;
  std::deque<std::unique_ptr<Watched>> all_;  // Guarded by mu_ (the list).
  std::vector<Watched*> pending_;             // Guarded by mu_.
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_COMMON_HANDSHAKE_WATCH_H_
