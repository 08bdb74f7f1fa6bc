#include "common/endpoint.h"

#include <charconv>
#include <string>

namespace sluice {
namespace {

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
  if (host == "*" && role == Role::kConnect) {
    return InvalidArgument("endpoint '" + std::string(part) +
                           "' connects, so it needs a host name, not *");
  }
  return Status::Ok();
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
