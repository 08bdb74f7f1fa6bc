// common/endpoint.h
//
// Endpoint specs, in CZMQ's convention: "@tcp://*:5557" binds,
// ">tcp://host:5557" connects, and a bare "tcp://host:5557" takes the role's
// default. A spec may list several endpoints separated by commas
// ("@tcp://*:5557,>tcp://hub:5558"); each keeps its own prefix.
//
// Accepted transports: tcp://HOST:PORT (PORT 1..65535, or * to bind an
// ephemeral port), ipc://PATH, inproc://NAME. Anything else is rejected with
// a message that quotes the offending part.
#ifndef SLUICE_COMMON_ENDPOINT_H_
#define SLUICE_COMMON_ENDPOINT_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sluice {

// Longest ipc:// path: sockaddr_un holds 108 bytes with the NUL.
inline constexpr size_t kMaxIpcPathBytes = 107;

enum class Role { kBind, kConnect };

struct Endpoint {
  Role role = Role::kConnect;
  std::string address;  // Without the @ or > prefix, as libzmq takes it.

  // "@tcp://*:5557" or ">tcp://host:5557".
  std::string ToString() const {
    return (role == Role::kBind ? "@" : ">") + address;
  }
};

// Parses a (possibly comma-separated) spec. `default_role` applies to parts
// without a prefix. Fails with kInvalidArgument naming the bad part.
StatusOr<std::vector<Endpoint>> ParseEndpoints(std::string_view spec,
                                               Role default_role);

}  // namespace sluice

#endif  // SLUICE_COMMON_ENDPOINT_H_
