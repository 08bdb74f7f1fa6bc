// common/curve.h
//
// CURVE encryption and authentication for every socket of a binary
// (ZeroMQ's CurveZMQ, libzmq built with libsodium):
//
//   --curve-secret NAME.key   this process's identity: the server key of the
//                             sockets it binds, the client key of those it
//                             connects (the public half is derived)
//   --curve-server FILE.pub   the public key of the bound peers it connects
//                             to (a deployment gives its binding processes
//                             one key pair, as a cluster key)
//   --curve-allow DIR|FILE    its bound sockets accept only clients whose
//                             public key is in a DIR/*.pub file, or on a
//                             line of FILE (ZAP)
//
// Key files hold the 40-character Z85 text of a key (a trailing newline is
// allowed); sluice-keygen NAME writes NAME.key (mode 0600) and NAME.pub.
// Fail closed: a socket set up for CURVE never falls back to plain; a
// plain client, or one whose key is not allowed, gets nothing in and
// nothing out.
//
// Thread safety: CurveConfig is read-only once made; ZapHandler runs its own
// thread and is safe to destroy from the thread that started it.
#ifndef SLUICE_COMMON_CURVE_H_
#define SLUICE_COMMON_CURVE_H_

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include <boost/program_options.hpp>
#include <zmq.hpp>

#include "common/counters.h"
#include "common/status.h"

namespace sluice {

struct CurveConfig {
  bool enabled() const { return !secret.empty(); }
  std::string secret;         // Z85, 40 characters; empty: CURVE off.
  std::string public_key;     // Derived from `secret`.
  std::string server_public;  // --curve-server; empty if not given.
  // --curve-allow: the client keys (Z85) bound sockets accept; empty with
  // allow_any: every CURVE client (encryption without an allow-list).
  std::set<std::string> allowed;
  bool allow_any = true;
};

// Registers --curve-secret, --curve-server, --curve-allow.
void AddCurveFlags(boost::program_options::options_description& options);

// Reads them: kInvalidArgument naming the flag and the file for a key file
// that is missing, unreadable, not 40 Z85 characters, or (a secret) readable
// by group or others; for --curve-server or --curve-allow without
// --curve-secret; for an allow folder without a .pub file.
StatusOr<CurveConfig> ReadCurveFlags(const boost::program_options::variables_map& vm);

// Reads one key file (see above). `flag` names it in errors.
StatusOr<std::string> ReadKeyFile(const std::string& path, const std::string& flag,
                                  bool secret);

// Applies `config` to a socket before it binds (`server`) or connects.
// kInvalidArgument if a connecting socket has no --curve-server.
Status ApplyCurve(zmq::socket_t& socket, const CurveConfig& config, bool server);

// Answers ZeroMQ's authentication requests (ZAP, RFC 27) for the sockets of
// `context` that bind with CURVE: a client whose key is allowed gets in;
// others are refused, counted in `refused`, and logged once per key (at
// most 1024 keys remembered; later ones are only counted).
class ZapHandler {
 public:
  // Binds the handler in `context` (before any CURVE socket is made) and
  // starts its thread. nullptr, not an error, when CURVE is off.
  static StatusOr<std::unique_ptr<ZapHandler>> Start(
      zmq::context_t& context, const std::shared_ptr<const CurveConfig>& config,
      Counter& refused);
  // Stops the thread and closes the socket: destroy it before the context
  // is terminated.
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

 private:
  ZapHandler(zmq::context_t& context, const CurveConfig& config, Counter& refused);
  void Serve();

  // REP at inproc://zeromq.zap.01: bound by Start(), then used and closed
  // by the handler's thread only.
  zmq::socket_t socket_;
  int stop_fd_ = -1;  // Written by the destructor: the thread ends.
  const CurveConfig config_;
  Counter& refused_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_COMMON_CURVE_H_
