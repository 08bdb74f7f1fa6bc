#include "tests/integration/job.h"

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

}  // namespace sluice::testing
