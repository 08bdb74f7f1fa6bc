#include "common/flags.h"

namespace sluice {

void AddCommonFlags(po::options_description& options, unsigned sets,
                    const CommonFlags& d) {
  options.add_options()
      ("hwm", po::value<int64_t>()->default_value(d.socket.hwm),
       "socket high-water mark, in frames (a frame holds a batch of items)")
      ("linger-ms", po::value<int64_t>()->default_value(d.socket.linger_ms),
       "on exit, how long sockets may still flush queued frames (ms)")
      ("heartbeat-ms", po::value<int64_t>()->default_value(d.socket.heartbeat_ms),
       "liveness: probe each connection's peer every MS (TCP keepalive, "
       "whole seconds); a peer that answers nothing or takes no data for "
       "5 x MS (a vanished host, a dropped link, a frozen process) is "
       "disconnected, so that its work is replayed then, not after TCP "
       "gives up (0: off)")
      ("stats-interval", po::value<double>()->default_value(
                             d.stats_interval.count() / 1000.0),
       "log the counters every S seconds (0: only at exit)")
      ("metrics", po::value<std::string>()->default_value(""),
       "serve the counters to Prometheus at http://HOST:PORT/metrics "
       "(e.g. 0.0.0.0:9100; port 0 picks a free one; empty: off)");
  AddCurveFlags(options);
  if (sets & kQueueFlags) {
    options.add_options()
        ("queue", po::value<int64_t>()->default_value(
                      static_cast<int64_t>(d.queue_capacity)),
         "capacity of each internal queue, in items");
  }
  if (sets & kReceiverFlags) {
    options.add_options()
        ("max-frame-bytes",
         po::value<int64_t>()->default_value(
             static_cast<int64_t>(d.receive.max_frame_bytes)),
         "largest frame accepted; larger ones are counted as too_large and "
         "dropped (frames over twice this drop the sender's connection)");
  }
  if (sets & kSenderFlags) {
    options.add_options()
        ("batch-items", po::value<int64_t>()->default_value(
                            static_cast<int64_t>(d.send.batch_items)),
         "most items packed into one frame (batching never waits)")
        ("batch-bytes", po::value<int64_t>()->default_value(
                            static_cast<int64_t>(d.send.batch_bytes)),
         "a frame is cut once its items reach this many bytes")
        ("drain-timeout", po::value<double>()->default_value(
                              d.send.drain_timeout.count() / 1000.0),
         "after SIGINT/SIGTERM, at most this many seconds to send what is "
         "held before giving up (exit 69)");
  }
}

StatusOr<CommonFlags> ReadCommonFlags(const po::variables_map& vm,
                                      unsigned sets) {
  FlagReader read(vm);
  CommonFlags flags;
  flags.socket.hwm = static_cast<int>(read.Int("hwm", 1, 1'000'000));
  flags.socket.linger_ms = static_cast<int>(read.Int("linger-ms", 0, 3'600'000));
  flags.socket.heartbeat_ms = static_cast<int>(read.Int("heartbeat-ms", 0, 600'000));
  flags.stats_interval = read.Seconds("stats-interval", 0, 86400);
  flags.metrics_address = vm["metrics"].as<std::string>();
  auto curve = ReadCurveFlags(vm);
  if (!curve.ok()) return curve.status();
  if (curve->enabled()) {
    flags.socket.curve = std::make_shared<const CurveConfig>(std::move(*curve));
  }
  if (sets & kQueueFlags) {
    flags.queue_capacity = static_cast<size_t>(read.Int("queue", 1, 100'000'000));
  }
  if (sets & kReceiverFlags) {
    flags.receive.max_frame_bytes =
        static_cast<size_t>(read.Int("max-frame-bytes", 64, 512 << 20));
    flags.socket.max_frame_bytes = flags.receive.max_frame_bytes;
  }
  if (sets & kSenderFlags) {
    flags.send.batch_items =
        static_cast<size_t>(read.Int("batch-items", 1, 1'000'000));
    flags.send.batch_bytes =
        static_cast<size_t>(read.Int("batch-bytes", 1, 256 << 20));
    flags.send.drain_timeout = read.Seconds("drain-timeout", 0, 86400);
  }
  if (!read.status().ok()) return read.status();
  return flags;
}

}  // namespace sluice
