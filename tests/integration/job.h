// tests/integration/job.h
//
// Starts the real binaries of a Sluice job on 127.0.0.1 with ephemeral ports,
// each after the READY line of whatever it connects to, and an Injector that
// sends raw frames into a running process's socket.
#ifndef SLUICE_TESTS_INTEGRATION_JOB_H_
#define SLUICE_TESTS_INTEGRATION_JOB_H_

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "tests/harness/process.h"

namespace sluice::testing {

using Args = std::vector<std::string>;

// Starts a binary. A sink without --acks publishes its acks on an ephemeral
// port (READY ... acks=ADDR), so that tests never collide on 5559.
inline std::unique_ptr<Process> Start(const std::string& binary, Args args,
                                      std::optional<std::string> input = {}) {
  if (binary == "sluice-sink" &&
      std::find(args.begin(), args.end(), "--acks") == args.end()) {
    args.insert(args.end(), {"--acks", "@tcp://127.0.0.1:*"});
  }
  args.insert(args.begin(), BinaryPath(binary));
  return std::make_unique<Process>(
      std::move(args), std::move(input), std::vector<std::string>{},
      [](const std::string& message) { ADD_FAILURE() << message; });
}

// Runs a binary to completion and returns its exit code.
inline int RunToExit(const std::string& binary, Args args,
                     std::string* out = nullptr, std::string* err = nullptr) {
  if (binary == "sluice-producer") args.insert(args.end(), {"--acks", "off"});
  auto p = Start(binary, std::move(args));
  auto code = p->Wait(std::chrono::seconds(30));
  if (out) *out = p->out();
  if (err) *err = p->err();
  return code.value_or(-1);
}

// A bound PUSH socket of the test's own, for sending raw frames.
class Injector {
 public:
  // Binds 127.0.0.1 on an ephemeral port (a stage connects to address()).
  Injector() : socket_(context_, zmq::socket_type::push) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndtimeo, 20000);
    socket_.bind("tcp://127.0.0.1:*");
    address_ = socket_.get(zmq::sockopt::last_endpoint);
  }
  // Connects to a bound socket of a running process instead.
  explicit Injector(const std::string& connect_to)
      : socket_(context_, zmq::socket_type::push) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndtimeo, 20000);
    socket_.connect(connect_to);
    address_ = connect_to;
  }
  const std::string& address() const { return address_; }
  // Blocks (up to 20 s) until a peer takes the frame.
  void Send(const std::string& bytes) {
    zmq::message_t frame(bytes.data(), bytes.size());
    ASSERT_TRUE(socket_.send(frame, zmq::send_flags::none))
        << "nobody took a frame from " << address_;
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::string address_;
};

// Serialized envelopes for injection.
std::string BatchFrame(const std::string& stream,
                       const std::vector<uint64_t>& seqs,
                       const std::string& payload_prefix = "result_");
std::string EndOfStreamFrame(const std::string& stream, uint64_t count);
// A valid batch with the version field set to `version`.
std::string VersionedFrame(uint32_t version);

inline nlohmann::json ReadReport(const std::string& path) {
  std::string text = ReadFile(path);
  auto report = nlohmann::json::parse(text, nullptr, false);
  EXPECT_FALSE(report.is_discarded()) << "report at " << path << ": " << text;
  return report;
}

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_INTEGRATION_JOB_H_
