#include "tests/integration/job.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/sluice.pb.h"

namespace sluice::testing {

std::string BatchFrame(const std::string& stream,
                       const std::vector<uint64_t>& seqs,
                       const std::string& payload_prefix) {
  wire::Envelope e;
  e.set_version(1);
  for (uint64_t seq : seqs) {
    wire::Item* item = e.mutable_batch()->add_items();
    item->set_stream(stream);
    item->set_seq(seq);
    item->set_payload(payload_prefix + std::to_string(seq));
  }
  return e.SerializeAsString();
}

std::string EndOfStreamFrame(const std::string& stream, uint64_t count) {
  wire::Envelope e;
  e.set_version(1);
  e.mutable_end_of_stream()->set_stream(stream);
  e.mutable_end_of_stream()->set_count(count);
  return e.SerializeAsString();
}

std::string VersionedFrame(uint32_t version) {
  wire::Envelope e;
  e.set_version(version);
  wire::Item* item = e.mutable_batch()->add_items();
  item->set_stream("bogus");
  item->set_seq(0);
  return e.SerializeAsString();
}

std::string HttpGet(const std::string& address, const std::string& path) {
  size_t colon = address.rfind(':');
  sockaddr_in peer = {};
  peer.sin_family = AF_INET;
  peer.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &peer.sin_addr) != 1) {
    return "";
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&peer), sizeof(peer)) == 0) {
    std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

}  // namespace sluice::testing
