#include "common/endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <string>

namespace sluice {
namespace {

bool IsHostNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_';
}

// HOST of tcp://HOST:PORT, other than "*". libzmq takes a word it cannot
// read as an address for a name to look up (and, when binding, for an
// interface), so a mistyped address would fail only later, out of sight:
// at connect, in a resolver retried every few hundred milliseconds. What
// is clearly meant as an address is checked as one here.
Status CheckTcpHost(std::string_view host, Role role, std::string_view part) {
  const std::string quoted = "endpoint '" + std::string(part) + "' has host '" +
                             std::string(host) + "'";
  if (host.front() == '[') {
    // [IPv6], optionally with a %zone.
    if (host.size() < 3 || host.back() != ']') {
      return InvalidArgument(quoted + ", which is not an IPv6 address in brackets");
    }
    std::string address(host.substr(1, host.size() - 2));
    address = address.substr(0, address.find('%'));
    in6_addr parsed;
    if (inet_pton(AF_INET6, address.c_str(), &parsed) != 1) {
      return InvalidArgument(quoted + ", which is not an IPv6 address");
    }
    return Status::Ok();
  }
  if (host.find_first_not_of("0123456789.") == std::string_view::npos) {
    // Digits and dots only: that is an IPv4 address or a typo, never a name.
    in_addr parsed;
    if (inet_pton(AF_INET, std::string(host).c_str(), &parsed) != 1) {
      return InvalidArgument(quoted + ", which is not an IPv4 address (four "
                             "numbers 0..255 separated by dots)");
    }
    return Status::Ok();
  }
  // A bound host may name an interface, whose name Linux hardly limits; a
  // connecting one is a DNS name (or libzmq's "SOURCE;HOST" form).
  if (role == Role::kConnect) {
    for (char c : host) {
      if (!IsHostNameChar(c) && c != ';' && c != ':') {
        return InvalidArgument(quoted + ", which is not a host name (letters, "
                               "digits, '-', '_' and '.') or an address");
      }
    }
  }
  return Status::Ok();
}

Status CheckTcpAddress(std::string_view rest, Role role,
                       std::string_view part) {
  // rest is "HOST:PORT"; HOST may be "[v6]" or "*".
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return InvalidArgument("endpoint '" + std::string(part) +
                           "' needs HOST:PORT after tcp://");
  }
  std::string_view port = rest.substr(colon + 1);
  if (port == "*" || port == "0") {
    if (role == Role::kConnect) {
      return InvalidArgument("endpoint '" + std::string(part) +
                             "' connects, so it needs a real port, not *");
    }
    return Status::Ok();
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535) {
    return InvalidArgument("endpoint '" + std::string(part) + "' has port '" +
                           std::string(port) + "'; expected 1..65535 or *");
  }
  std::string_view host = rest.substr(0, colon);
  if (host == "*") {
    if (role == Role::kConnect) {
      return InvalidArgument("endpoint '" + std::string(part) +
                             "' connects, so it needs a host name, not *");
    }
    return Status::Ok();
  }
  return CheckTcpHost(host, role, part);
}

}  // namespace

StatusOr<std::vector<Endpoint>> ParseEndpoints(std::string_view spec,
                                               Role default_role) {
  std::vector<Endpoint> endpoints;
  if (spec.empty()) return InvalidArgument("empty endpoint");
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view part = spec.substr(start, comma - start);
    start = comma + 1;
    if (part.empty()) {
      return InvalidArgument("endpoint list '" + std::string(spec) +
                             "' has an empty entry");
    }
    Endpoint endpoint;
    endpoint.role = default_role;
    std::string_view address = part;
    if (address.front() == '@' || address.front() == '>') {
      endpoint.role = address.front() == '@' ? Role::kBind : Role::kConnect;
      address.remove_prefix(1);
    }
    if (address.starts_with("tcp://")) {
      Status status = CheckTcpAddress(address.substr(6), endpoint.role, part);
      if (!status.ok()) return status;
    } else if (address.starts_with("ipc://") ||
               address.starts_with("inproc://")) {
      if (address.size() == address.find("://") + 3) {
        return InvalidArgument("endpoint '" + std::string(part) +
                               "' has no path or name");
      }
      // A Unix socket path fits in sockaddr_un's 108 bytes, NUL included.
      if (address.starts_with("ipc://") && address.size() - 6 > kMaxIpcPathBytes) {
        return InvalidArgument("endpoint '" + std::string(part) + "' has a path of " +
                               std::to_string(address.size() - 6) +
                               " bytes; ipc paths hold at most " +
                               std::to_string(kMaxIpcPathBytes));
      }
    } else {
      return InvalidArgument(
          "endpoint '" + std::string(part) +
          "' is not tcp://HOST:PORT, ipc://PATH or inproc://NAME (prefix @ "
          "to bind, > to connect)");
    }
    endpoint.address = std::string(address);
    endpoints.push_back(std::move(endpoint));
    if (comma == spec.size()) break;
  }
  return endpoints;
}

}  // namespace sluice
