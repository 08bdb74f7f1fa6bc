#include "stage/stage.h"

#include <atomic>
#include <memory>
#include <random>
#include <thread>

#include "common/bounded_queue.h"
#include "common/log.h"
#include "common/socket.h"

namespace sluice {
namespace {

// Items a zero-latency worker takes per queue lock.
constexpr size_t kWorkerRun = 64;

// One op's pool of threads between two queues. The last thread to finish
// closes the output queue, which is how the stop propagates downstream.
class OpPool {
 public:
  OpPool(const OpSpec& spec, BoundedQueue<Item>& in, BoundedQueue<Item>& out,
         Counter& processed, Counter& unexpected)
      : spec_(spec), in_(in), out_(out), processed_(processed),
        unexpected_(unexpected), running_(spec.threads) {
    for (int i = 0; i < spec.threads; ++i) {
      threads_.emplace_back([this, i] { Work(i); });
    }
  }
  ~OpPool() { Join(); }

  void Join() {
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Work(int index) {
    std::mt19937_64 random(std::random_device{}() + index);
    const int64_t max_us =
        std::chrono::duration_cast<std::chrono::microseconds>(spec_.max_latency)
            .count();
    std::uniform_int_distribution<int64_t> latency_us(0, std::max<int64_t>(0, max_us - 1));
    const size_t run = max_us > 0 ? 1 : kWorkerRun;
    std::vector<Item> items;
    while (true) {
      items.clear();
      if (in_.PopUpTo(run, items) == 0) break;  // Closed and drained.
      uint64_t done = 0;
      for (Item& item : items) {
        if (item.end_of_stream) continue;
        if (max_us > 0) {
          // The simulated remote call: the one deliberate sleep.
          std::this_thread::sleep_for(std::chrono::microseconds(latency_us(random)));
        }
        if (!ApplyOp(spec_.kind, item.payload)) unexpected_.Add();
        ++done;
      }
      processed_.Add(done);
      if (out_.PushAll(items) < items.size()) break;  // Aborting.
    }
    if (running_.fetch_sub(1) == 1) out_.Close();
  }

  const OpSpec spec_;
  BoundedQueue<Item>& in_;
  BoundedQueue<Item>& out_;
  Counter& processed_;
  Counter& unexpected_;
  std::atomic<int> running_;
  std::vector<std::thread> threads_;
};

}  // namespace

nlohmann::json StageCounters::ToJson(const StageOptions& options) const {
  nlohmann::json out;
  receive.AppendTo(out);
  send.AppendTo(out);
  for (size_t i = 0; i < options.ops.size(); ++i) {
    out["processed_" + std::to_string(i) + "_" +
        std::string(OpName(options.ops[i].kind))] = processed[i].value();
  }
  out["unexpected_input"] = unexpected_input.value();
  return out;
}

Status RunStage(const StageOptions& options, StopSignal& stop,
                StageCounters& counters, std::ostream& ready_out) {
  zmq::context_t context(1);
  // Both sockets are made here so that bind errors surface before READY; each
  // is then handed to its thread (thread start is a full memory barrier, as
  // libzmq requires for migrating a socket) and used and closed only there.
  StatusOr<OpenedSocket> in = OpenSocket(context, zmq::socket_type::pull,
                                         options.in, options.flags.socket);
  if (!in.ok()) return in.status();
  StatusOr<OpenedSocket> out = OpenSocket(context, zmq::socket_type::push,
                                          options.out, options.flags.socket);
  if (!out.ok()) return out.status();
  ready_out << "READY in=" << DescribeAddresses(options.in, *in)
            << " out=" << DescribeAddresses(options.out, *out) << std::endl;
  spdlog::info("in {} -> out {}", DescribeAddresses(options.in, *in),
               DescribeAddresses(options.out, *out));

  const size_t n_ops = options.ops.size();
  std::vector<std::unique_ptr<BoundedQueue<Item>>> queues;
  for (size_t i = 0; i <= n_ops; ++i) {
    queues.push_back(
        std::make_unique<BoundedQueue<Item>>(options.flags.queue_capacity));
  }
  auto close_all = [&] {
    for (auto& q : queues) q->Close();
  };

  Status receive_status;
  std::thread receiver([&, socket = std::move(in->socket)]() mutable {
    StatusOr<ReceiveEnd> end = ReceiveLoop(socket, stop, options.flags.receive,
                                           *queues[0], counters.receive);
    if (!end.ok()) {
      receive_status = end.status();
      close_all();
    }
    queues[0]->Close();  // Stop path: the pools drain what is queued.
    socket.close();
  });

  std::vector<std::unique_ptr<OpPool>> pools;
  for (size_t i = 0; i < n_ops; ++i) {
    pools.push_back(std::make_unique<OpPool>(
        options.ops[i], *queues[i], *queues[i + 1], counters.processed[i],
        counters.unexpected_input));
  }

  Status send_status;
  std::thread sender([&, socket = std::move(out->socket)]() mutable {
    send_status =
        SendLoop(socket, stop, options.flags.send, *queues[n_ops], counters.send);
    if (!send_status.ok()) {
      close_all();
      stop.Request();  // Nothing can leave: stop reading too.
    }
    socket.close();
  });

  receiver.join();
  for (auto& pool : pools) pool->Join();
  sender.join();
  bool flushed = TerminateContext(context, options.flags.socket.linger_ms);
  if (!receive_status.ok()) return receive_status;
  if (!send_status.ok()) return send_status;
  if (!flushed) {
    return Unavailable("frames were still queued after --linger-ms " +
                       std::to_string(options.flags.socket.linger_ms) +
                       ": downstream stopped taking them");
  }
  return Status::Ok();
}

}  // namespace sluice
