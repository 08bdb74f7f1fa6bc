#include "common/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <exception>

#include <spdlog/spdlog.h>

namespace sluice {
namespace {

class CountersCollectable : public prometheus::Collectable {
 public:
  CountersCollectable(std::string program, MetricsServer::Snapshot snapshot)
      : program_(std::move(program)), snapshot_(std::move(snapshot)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> families;
    nlohmann::json counters = snapshot_();
    if (counters.contains("gauges")) {
      for (const auto& [name, value] : counters["gauges"].items()) {
        Add(families, name, value, prometheus::MetricType::Gauge);
      }
    }
    for (const auto& [name, value] : counters.items()) {
      Add(families, name, value, prometheus::MetricType::Counter);
    }
    return families;
  }

 private:
  // One family of one sample: a gauge "sluice_<name>", or a counter
  // "sluice_<name>_total". Skips what is not a number.
  void Add(std::vector<prometheus::MetricFamily>& families, const std::string& name,
           const nlohmann::json& value, prometheus::MetricType type) const {
    if (!value.is_number()) return;
    const bool gauge = type == prometheus::MetricType::Gauge;
    prometheus::MetricFamily family;
    family.name = "sluice_" + name + (gauge ? "" : "_total");
    family.help = std::string("Sluice ") + (gauge ? "gauge " : "counter ") + name +
                  " (see docs/operating.md, What to watch)";
    family.type = type;
    prometheus::ClientMetric metric;
    metric.label.push_back({"binary", program_});
    (gauge ? metric.gauge.value : metric.counter.value) = value.get<double>();
    family.metric.push_back(std::move(metric));
    families.push_back(std::move(family));
  }

  const std::string program_;
  const MetricsServer::Snapshot snapshot_;
};

}  // namespace

struct MetricsServer::Impl {
  std::shared_ptr<CountersCollectable> collectable;
  std::unique_ptr<prometheus::Exposer> exposer;
};

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address, const std::string& program,
    Snapshot snapshot) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return InvalidArgument("--metrics '" + address + "' is not HOST:PORT");
  }
  auto impl = std::make_unique<Impl>();
  impl->collectable =
      std::make_shared<CountersCollectable>(program, std::move(snapshot));
  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(address, 1);
  } catch (const std::exception& e) {
    return Unavailable("cannot serve metrics on " + address + ": " + e.what());
  }
  impl->exposer->RegisterCollectable(impl->collectable);
  std::vector<int> ports = impl->exposer->GetListeningPorts();
  std::string resolved = address.substr(0, colon + 1) +
                         (ports.empty() ? address.substr(colon + 1)
                                        : std::to_string(ports.front()));
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(impl), resolved));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl, std::string address)
    : impl_(std::move(impl)), address_(std::move(address)) {}

MetricsServer::~MetricsServer() = default;

StatusOr<std::unique_ptr<MetricsServer>> StartMetricsIfAsked(
    const std::string& address, const std::string& program,
    MetricsServer::Snapshot snapshot) {
  if (address.empty()) return std::unique_ptr<MetricsServer>();
  auto server = MetricsServer::Start(address, program, std::move(snapshot));
  if (server.ok()) {
    spdlog::info("serving metrics on http://{}/metrics", (*server)->address());
  }
  return server;
}

}  // namespace sluice
