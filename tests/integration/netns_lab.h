// tests/integration/netns_lab.h
//
// NetnsLab builds several "hosts" on one machine for a test: one network
// namespace per host, each with its own address on a private bridge, and
// tears it all down again. Processes run inside a host through
// `ip netns exec`. CutLink/RestoreLink take a host's link down and up, as a
// pulled cable would; DropPackets makes a host fall silent (iptables).
//
// Needs root and iproute2. Names carry the test process's pid so that
// concurrent runs do not collide.
#ifndef SLUICE_TESTS_INTEGRATION_NETNS_LAB_H_
#define SLUICE_TESTS_INTEGRATION_NETNS_LAB_H_

#include <string>
#include <vector>

#include "tests/integration/job.h"

namespace sluice::testing {

class NetnsLab {
 public:
  // Creates `hosts` namespaces. Check ok() (and reason()) before use.
  explicit NetnsLab(int hosts);
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  bool ok() const { return ok_; }
  const std::string& reason() const { return reason_; }

  // The address of host `i` on the lab's bridge, e.g. "10.213.7.11".
  std::string Address(int host) const;
  // Starts a Sluice binary inside host `i`.
  std::unique_ptr<Process> Start(int host, const std::string& binary, Args args);
  void CutLink(int host);
  void RestoreLink(int host);
  // Drops every packet into and out of `host` (iptables in its namespace),
  // as a host that vanished would: no reset, no error its peers can see.
  // False if iptables is missing or refuses.
  bool DropPackets(int host);

 private:
  bool Run(const std::string& command);
  std::string Namespace(int host) const;
  std::string HostVeth(int host) const;

  std::string tag_;
  std::string bridge_;
  std::string subnet_;  // "10.213.N"
  std::string ip_;      // Path of the ip binary.
  int hosts_ = 0;
  bool ok_ = false;
  bool forward_rule_ = false;
  std::string reason_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_INTEGRATION_NETNS_LAB_H_
