// common/flags.h
//
// Flags that more than one binary takes, registered and read in one place so
// that their names, defaults, ranges and help text agree everywhere:
//   --hwm N              socket high-water mark, in frames
//   --queue N            binaries with internal queues: their capacity, in items
//   --linger-ms MS       how long closing sockets may flush queued frames
//   --heartbeat-ms MS    liveness probes; a peer silent for 5 x MS is dropped
//   --max-frame-bytes N  receivers: largest frame decoded
//   --batch-items N      senders: most items per frame
//   --batch-bytes N      senders: a frame is cut once it holds this much
//   --drain-timeout S    senders: after SIGTERM, how long to keep sending
//   --stats-interval S   log the counters every S seconds (0 = only at exit)
//   --metrics HOST:PORT  serve the counters to Prometheus (off by default)
#ifndef SLUICE_COMMON_FLAGS_H_
#define SLUICE_COMMON_FLAGS_H_

#include <chrono>
#include <cstddef>

#include "common/config.h"
#include "common/frame_io.h"
#include "common/socket.h"

namespace sluice {

struct CommonFlags {
  SocketOptions socket;
  ReceiveOptions receive;
  SendOptions send;
  size_t queue_capacity = 1024;  // Read only with kQueueFlags.
  std::chrono::milliseconds stats_interval{30000};
  std::string metrics_address;  // Empty: no metrics endpoint.
};

enum FlagSet : unsigned {
  kSenderFlags = 1,    // batch-items, batch-bytes, drain-timeout
  kReceiverFlags = 2,  // max-frame-bytes
  kQueueFlags = 4,     // queue (the sink has no internal queue)
};

// Registers --hwm, --linger-ms, --heartbeat-ms, --stats-interval, --metrics,
// the CURVE flags and the flags of `sets`, with `defaults` as defaults.
void AddCommonFlags(po::options_description& options, unsigned sets,
                    const CommonFlags& defaults = CommonFlags());

// Reads and range-checks what AddCommonFlags registered.
StatusOr<CommonFlags> ReadCommonFlags(const po::variables_map& vm,
                                      unsigned sets);

}  // namespace sluice

#endif  // SLUICE_COMMON_FLAGS_H_
