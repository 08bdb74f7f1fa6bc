#include "common/flags.h"

namespace sluice {

void AddCommonFlags(po::options_description& options, unsigned sets,
                    const CommonFlags& d) {
  options.add_options()
      ("hwm", po::value<int64_t>()->default_value(d.socket.hwm),
       "socket high-water mark, in frames (a frame holds a batch of items)")
      ("queue", po::value<int64_t>()->default_value(
                    static_cast<int64_t>(d.queue_capacity)),
       "capacity of each internal queue, in items")
      ("linger-ms", po::value<int64_t>()->default_value(d.socket.linger_ms),
       "on exit, how long sockets may still flush queued frames (ms)")
      ("stats-interval", po::value<double>()->default_value(
                             d.stats_interval.count() / 1000.0),
       "log the counters every S seconds (0: only at exit)");
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

namespace {

StatusOr<int64_t> Get(const po::variables_map& vm, const char* flag,
                      int64_t min, int64_t max) {
  int64_t value = vm[flag].as<int64_t>();
  Status status = CheckRange(flag, value, min, max);
  if (!status.ok()) return status;
  return value;
}

StatusOr<std::chrono::milliseconds> GetSeconds(const po::variables_map& vm,
                                               const char* flag, double max) {
  double seconds = vm[flag].as<double>();
  if (!(seconds >= 0 && seconds <= max)) {
    return InvalidArgument("--" + std::string(flag) + " must be in [0, " +
                           std::to_string(static_cast<int64_t>(max)) +
                           "] seconds, got " + std::to_string(seconds));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

StatusOr<CommonFlags> ReadCommonFlags(const po::variables_map& vm,
                                      unsigned sets) {
  CommonFlags flags;
  auto hwm = Get(vm, "hwm", 1, 1'000'000);
  if (!hwm.ok()) return hwm.status();
  flags.socket.hwm = static_cast<int>(*hwm);
  auto queue = Get(vm, "queue", 1, 100'000'000);
  if (!queue.ok()) return queue.status();
  flags.queue_capacity = static_cast<size_t>(*queue);
  auto linger = Get(vm, "linger-ms", 0, 3'600'000);
  if (!linger.ok()) return linger.status();
  flags.socket.linger_ms = static_cast<int>(*linger);
  auto stats = GetSeconds(vm, "stats-interval", 86400);
  if (!stats.ok()) return stats.status();
  flags.stats_interval = *stats;
  if (sets & kReceiverFlags) {
    auto max_frame = Get(vm, "max-frame-bytes", 64, 512 << 20);
    if (!max_frame.ok()) return max_frame.status();
    flags.receive.max_frame_bytes = static_cast<size_t>(*max_frame);
    flags.socket.max_frame_bytes = flags.receive.max_frame_bytes;
  }
  if (sets & kSenderFlags) {
    auto items = Get(vm, "batch-items", 1, 1'000'000);
    if (!items.ok()) return items.status();
    flags.send.batch_items = static_cast<size_t>(*items);
    auto bytes = Get(vm, "batch-bytes", 1, 256 << 20);
    if (!bytes.ok()) return bytes.status();
    flags.send.batch_bytes = static_cast<size_t>(*bytes);
    auto drain = GetSeconds(vm, "drain-timeout", 86400);
    if (!drain.ok()) return drain.status();
    flags.send.drain_timeout = *drain;
  }
  return flags;
}

}  // namespace sluice
