#include "stage/stage.h"

#include "common/thread.h"

#include <memory>
#include <thread>

#include "common/bounded_queue.h"
#include "common/log.h"
#include "common/socket.h"

namespace sluice {

nlohmann::json StageCounters::ToJson(const StageOptions& options) const {
  nlohmann::json out;
  receive.AppendTo(out);
  send.AppendTo(out);
  for (size_t i = 0; i < options.ops.size(); ++i) {
    const std::string suffix =
        std::to_string(i) + "_" + options.ops[i].definition->name;
    out["processed_" + suffix] = ops[i].processed.value();
    out["failed_" + suffix] = ops[i].failed.value();
    out["retries_" + suffix] = ops[i].retries.value();
    out["timeouts_" + suffix] = ops[i].timeouts.value();
    out["dropped_" + suffix] = ops[i].dropped.value();
  }
  return out;
}

Status RunStage(const StageOptions& options, StopSignal& stop,
                StageCounters& counters, std::ostream& ready_out) {
  // The ops first: a broken one stops the stage before it binds anything.
  std::vector<std::unique_ptr<OpRunner>> runners;
  for (size_t i = 0; i < options.ops.size(); ++i) {
    auto runner = OpRunner::Create(options.ops[i], *options.op_flags,
                                   counters.ops[i]);
    if (!runner.ok()) return runner.status();
    runners.push_back(std::move(*runner));
  }

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
  // If the system refuses a thread: stop and join what runs, then report.
  std::vector<std::thread> started;
  auto abort_start = [&](Status why) {
    stop.Request();
    close_all();
    for (std::thread& t : started) t.join();
    for (auto& runner : runners) runner->Join();
    return why;
  };
  auto receiver = StartThread("receive", [&, socket = std::move(in->socket)]() mutable {
    StatusOr<ReceiveEnd> end = ReceiveLoop(socket, stop, options.flags.receive,
                                           *queues[0], counters.receive);
    if (!end.ok()) {
      receive_status = end.status();
      close_all();
    }
    queues[0]->Close();  // Stop path: the pools drain what is queued.
    socket.close();
  });
  if (!receiver.ok()) return abort_start(receiver.status());
  started.push_back(std::move(*receiver));

  for (size_t i = 0; i < n_ops; ++i) {
    Status s = runners[i]->Start(*queues[i], *queues[i + 1]);
    if (!s.ok()) return abort_start(s);
  }

  Status send_status;
  auto sender = StartThread("send", [&, socket = std::move(out->socket)]() mutable {
    send_status =
        SendLoop(socket, stop, options.flags.send, *queues[n_ops], counters.send);
    if (!send_status.ok()) {
      close_all();
      stop.Request();  // Nothing can leave: stop reading too.
    }
    socket.close();
  });
  if (!sender.ok()) return abort_start(sender.status());

  started[0].join();
  for (auto& runner : runners) runner->Join();
  sender->join();
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
