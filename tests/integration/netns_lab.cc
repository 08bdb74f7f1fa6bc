#include "tests/integration/netns_lab.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>

namespace sluice::testing {
namespace {

std::string Which(const std::string& tool) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string path = std::string(dir) + tool;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

}  // namespace

NetnsLab::NetnsLab(int hosts) : hosts_(hosts) {
  int id = static_cast<int>(getpid() % 100000);
  tag_ = "sl" + std::to_string(id);
  bridge_ = tag_ + "br";
  subnet_ = "10.213." + std::to_string(id % 250);
  ip_ = Which("ip");
  if (geteuid() != 0) {
    reason_ = "needs root to create network namespaces";
    return;
  }
  if (ip_.empty()) {
    reason_ = "needs iproute2's ip";
    return;
  }
  if (!Run(ip_ + " link add " + bridge_ + " type bridge") ||
      !Run(ip_ + " addr add " + subnet_ + ".1/24 dev " + bridge_) ||
      !Run(ip_ + " link set " + bridge_ + " up")) {
    reason_ = "cannot create a bridge (no CAP_NET_ADMIN?)";
    return;
  }
  // Once dockerd has run, bridged traffic meets iptables' FORWARD chain with
  // policy DROP: let this bridge's own traffic through while the lab lives.
  std::string iptables = Which("iptables");
  if (!iptables.empty() &&
      Run(iptables + " -I FORWARD -i " + bridge_ + " -o " + bridge_ + " -j ACCEPT")) {
    forward_rule_ = true;
  }
  for (int i = 0; i < hosts; ++i) {
    std::string ns = Namespace(i);
    std::string veth = HostVeth(i);
    std::string inner = tag_ + "i" + std::to_string(i);
    if (!Run(ip_ + " netns add " + ns) ||
        !Run(ip_ + " link add " + veth + " type veth peer name " + inner) ||
        !Run(ip_ + " link set " + veth + " master " + bridge_) ||
        !Run(ip_ + " link set " + veth + " up") ||
        !Run(ip_ + " link set " + inner + " netns " + ns) ||
        !Run(ip_ + " -n " + ns + " link set " + inner + " name eth0") ||
        !Run(ip_ + " -n " + ns + " addr add " + Address(i) + "/24 dev eth0") ||
        !Run(ip_ + " -n " + ns + " link set eth0 up") ||
        !Run(ip_ + " -n " + ns + " link set lo up")) {
      reason_ = "cannot set up network namespace " + ns;
      return;
    }
  }
  ok_ = true;
}

NetnsLab::~NetnsLab() {
  for (int i = 0; i < hosts_; ++i) {
    Run(ip_ + " netns del " + Namespace(i) + " 2>/dev/null");
    Run(ip_ + " link del " + HostVeth(i) + " 2>/dev/null");
  }
  Run(ip_ + " link del " + bridge_ + " 2>/dev/null");
  if (forward_rule_) {
    Run(Which("iptables") + " -D FORWARD -i " + bridge_ + " -o " + bridge_ +
        " -j ACCEPT");
  }
}

bool NetnsLab::Run(const std::string& command) {
  int rc = std::system(command.c_str());
  if (rc != 0 && command.find("2>/dev/null") == std::string::npos) {
    std::cerr << "netns lab: '" << command << "' failed (" << rc << ")\n";
  }
  return rc == 0;
}

std::string NetnsLab::Namespace(int host) const {
  return tag_ + "h" + std::to_string(host);
}

std::string NetnsLab::HostVeth(int host) const {
  return tag_ + "v" + std::to_string(host);
}

std::string NetnsLab::Address(int host) const {
  return subnet_ + "." + std::to_string(11 + host);
}

std::unique_ptr<Process> NetnsLab::Start(int host, const std::string& binary,
                                         Args args) {
  if (binary == "sluice-sink" &&
      std::find(args.begin(), args.end(), "--acks") == args.end()) {
    args.insert(args.end(), {"--acks", "@tcp://0.0.0.0:*"});
  }
  args.insert(args.begin(), {ip_, "netns", "exec", Namespace(host), BinaryPath(binary)});
  return std::make_unique<Process>(
      std::move(args), std::nullopt, std::vector<std::string>{},
      [](const std::string& message) { ADD_FAILURE() << message; });
}

void NetnsLab::CutLink(int host) {
  Run(ip_ + " link set " + HostVeth(host) + " down");
}

void NetnsLab::RestoreLink(int host) {
  Run(ip_ + " link set " + HostVeth(host) + " up");
}

}  // namespace sluice::testing

namespace sluice::testing {

bool NetnsLab::DropPackets(int host) {
  const std::string iptables = Which("iptables");
  if (iptables.empty()) return false;
  const std::string in_host = ip_ + " netns exec " + Namespace(host) + " " + iptables;
  return Run(in_host + " -I INPUT -j DROP") && Run(in_host + " -I OUTPUT -j DROP");
}

}  // namespace sluice::testing
