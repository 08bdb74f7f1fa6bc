// common/metrics.h
//
// MetricsServer exports a process's counters to Prometheus over HTTP
// (GET http://HOST:PORT/metrics), through prometheus-cpp. It reads them at
// scrape time from `snapshot`, the same JSON object the process logs as
// "counters {...}": every numeric field becomes a counter named
// sluice_<field>_total with the label binary="<program>". Nothing is copied
// on the hot path.
//
// Thread safety: `snapshot` is called from the HTTP server's threads; it
// must only read atomics (our Counter).
#ifndef SLUICE_COMMON_METRICS_H_
#define SLUICE_COMMON_METRICS_H_

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace sluice {

class MetricsServer {
 public:
  using Snapshot = std::function<nlohmann::json()>;

  // Listens on `address` ("HOST:PORT"; port 0 picks a free one).
  // kInvalidArgument for a malformed address, kUnavailable if it cannot
  // listen there.
  static StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, const std::string& program,
      Snapshot snapshot);
  ~MetricsServer();

  // Where it listens, ports resolved: "127.0.0.1:41234".
  const std::string& address() const { return address_; }

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl, std::string address);
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

// Starts a MetricsServer if `address` is not empty and logs where it serves;
// returns null if it is empty.
StatusOr<std::unique_ptr<MetricsServer>> StartMetricsIfAsked(
    const std::string& address, const std::string& program,
    MetricsServer::Snapshot snapshot);

}  // namespace sluice

#endif  // SLUICE_COMMON_METRICS_H_
