// Issue 11, point 1: CURVE encryption and an allow-list. Keys from
// sluice-keygen; a job whose every socket is encrypted is exact, while a
// plain client and a client with an unlisted key, each sending 10,000 items
// into the stage and the sink during the same run, get none of them in.
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <zmq.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

std::string Trimmed(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// Key pairs made by sluice-keygen in a temporary folder.
struct Keys {
  TempDir dir;
  std::string Make(const std::string& name) {
    std::string err;
    EXPECT_EQ(RunToExit("sluice-keygen", {dir.File(name)}, nullptr, &err), 0) << err;
    return dir.File(name);
  }
};

// A peer of nobody's choosing: a PUSH socket that connects to `address`,
// plain or with CURVE keys of its own (`own`, for a server of key
// `server_pub`), queues `items` items in frames of 100, and waits for the
// handshake's outcome (a socket monitor event). True if the handshake
// failed, i.e. the peer refused it.
bool Intrude(const std::string& address, const std::string& stream, int items,
             const std::string& server_pub = "", const std::string& own = "") {
  zmq::context_t context(1);
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 0);
  push.set(zmq::sockopt::sndhwm, 1000);
  if (!own.empty()) {
    push.set(zmq::sockopt::curve_serverkey, Trimmed(ReadFile(server_pub + ".pub")).c_str());
    push.set(zmq::sockopt::curve_publickey, Trimmed(ReadFile(own + ".pub")).c_str());
    push.set(zmq::sockopt::curve_secretkey, Trimmed(ReadFile(own + ".key")).c_str());
  }
  const int failed = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  zmq_socket_monitor(push.handle(), "inproc://intruder", failed | ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  zmq::socket_t monitor(context, zmq::socket_type::pair);
  monitor.set(zmq::sockopt::rcvtimeo, 20000);
  monitor.connect("inproc://intruder");
  push.connect(address);
  for (int first = 0; first < items; first += 100) {
    std::vector<uint64_t> seqs;
    for (int i = first; i < first + 100; ++i) seqs.push_back(static_cast<uint64_t>(i));
    const std::string frame = BatchFrame(stream, seqs);
    zmq::message_t message(frame.data(), frame.size());
    (void)push.send(message, zmq::send_flags::dontwait);
  }
  zmq::message_t event, where;
  const bool got = monitor.recv(event).has_value() && monitor.recv(where).has_value();
  uint16_t id = 0;
  if (got) std::memcpy(&id, event.data(), sizeof(id));
  zmq_socket_monitor(push.handle(), nullptr, 0);
  return got && (id & failed) != 0;
}

TEST(Curve, KeygenWritesASecretOnlyItsOwnerReadsAndNeverOverwrites) {
  Keys keys;
  const std::string k = keys.Make("node");
  struct stat st;
  ASSERT_EQ(stat((k + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((k + ".pub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  const std::string secret = Trimmed(ReadFile(k + ".key"));
  const std::string pub = Trimmed(ReadFile(k + ".pub"));
  ASSERT_EQ(secret.size(), 40u);
  char derived[41];
  ASSERT_EQ(zmq_curve_public(derived, secret.c_str()), 0);
  EXPECT_EQ(pub, derived);
  std::string err;
  EXPECT_EQ(RunToExit("sluice-keygen", {k}, nullptr, &err), 64);
  EXPECT_NE(err.find("never overwritten"), std::string::npos) << err;
  EXPECT_EQ(Trimmed(ReadFile(k + ".key")), secret);
}

TEST(Curve, BadKeyFilesExit64NamingThem) {
  Keys keys;
  const std::string k = keys.Make("node");
  std::ofstream(keys.dir.File("short.key")) << "tooshort\n";
  chmod(keys.dir.File("short.key").c_str(), 0600);
  std::filesystem::copy_file(k + ".key", keys.dir.File("loose.key"));
  chmod(keys.dir.File("loose.key").c_str(), 0644);
  std::filesystem::create_directory(keys.dir.File("empty"));
  const std::vector<std::pair<Args, std::string>> cases = {
      {{"--curve-secret", keys.dir.File("missing.key")}, "missing.key"},
      {{"--curve-secret", keys.dir.File("short.key")}, "40 characters"},
      {{"--curve-secret", keys.dir.File("loose.key")}, "mode 0644"},
      {{"--curve-server", k + ".pub"}, "--curve-server needs --curve-secret"},
      {{"--curve-secret", k + ".key", "--curve-allow", keys.dir.File("empty")}, "no key in"},
      {{"--curve-secret", k + ".key", "--curve-allow", keys.dir.File("short.key")}, "line 1"},
  };
  for (const auto& [args, says] : cases) {
    for (const std::string binary : {"sluice-stage", "sluice-sink"}) {
      std::string err;
      EXPECT_EQ(RunToExit(binary, args, nullptr, &err), 64) << binary << " " << says;
      EXPECT_NE(err.find(says), std::string::npos) << err;
    }
  }
}

TEST(Curve, EncryptedJobIsExactWhilePlainAndUnlistedClientsGetNothingIn) {
  Keys keys;
  const std::string cluster = keys.Make("cluster");  // The binding processes'.
  const std::string producer = keys.Make("producer");
  const std::string stranger = keys.Make("stranger");
  const std::string allow = keys.dir.File("allow");
  std::filesystem::create_directory(allow);
  std::filesystem::copy_file(cluster + ".pub", allow + "/cluster.pub");
  std::filesystem::copy_file(producer + ".pub", allow + "/producer.pub");
  const Args server = {"--curve-secret", cluster + ".key", "--curve-server", cluster + ".pub",
                       "--curve-allow", allow};
  Chain chain;
  Args stage = {"--op", "token", "--latency-ms", "1", "--threads", "10"};
  stage.insert(stage.end(), server.begin(), server.end());
  // The sink's allow-list is one file of keys, as a Docker secret would be.
  const std::string allow_file = keys.dir.File("allowed.txt");
  std::ofstream(allow_file) << "# who may connect\n"
                            << ReadFile(cluster + ".pub") << ReadFile(producer + ".pub");
  Args sink = {"--ordered", "--curve-secret", cluster + ".key", "--curve-allow", allow_file};
  chain.Run({stage}, {"--count", "20000", "--curve-secret", producer + ".key",
                      "--curve-server", cluster + ".pub"},
            sink);
  // While the job runs: 10,000 items each from a plain client and from
  // one with a key nobody listed, into the stage and into the sink.
  const std::string stage_in = chain.stages[0]->WaitReady()["in"];
  const std::string sink_in = chain.sink->WaitReady()["in"];
  for (const std::string& target : {stage_in, sink_in}) {
    EXPECT_TRUE(Intrude(target, "intruder-plain", 10000)) << target;
    EXPECT_TRUE(Intrude(target, "intruder-keyed", 10000, cluster, stranger)) << target;
  }
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  nlohmann::json report = chain.Report();
  ExpectCompleteExactly(report, 20000);
  ASSERT_EQ(report["streams"].size(), 1u) << report.dump();
  EXPECT_EQ(report["received"], 20000);
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")).find("intruder"), std::string::npos);
  // The keyed stranger was asked about and refused, by both.
  EXPECT_GT(chain.stages[0]->LastCounters()["curve_refused"].get<int>(), 0);
  EXPECT_GT(chain.sink->LastCounters()["curve_refused"].get<int>(), 0);
  EXPECT_NE(chain.sink->err().find("curve.refused"), std::string::npos);
}

}  // namespace
}  // namespace sluice::testing
