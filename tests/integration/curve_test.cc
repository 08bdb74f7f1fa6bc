// Issue 11, point 1: CURVE encryption and an allow-list. Keys from
// sluice-keygen; a job whose every socket is encrypted is exact, while a
// plain client and a client with an unlisted key, each sending 10,000 items
// into the stage and the sink during the same run, get none of them in.
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <zmq.h>

#include "common/envelope_codec.h"
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
  // The plain one never got as far as showing a key: refused by mechanism,
  // counted and logged with the reason.
  for (Process* p : {chain.stages[0].get(), chain.sink.get()}) {
    EXPECT_GE(p->LastCounters()["handshake_failed"].get<int>(), 2) << p->err();
    EXPECT_NE(p->err().find("handshake.refused: in"), std::string::npos)
        << p->err();
  }
}

// Whoever holds the address a producer takes its acks from could tell it
// that everything arrived: a forger that answers the hello with "complete"
// and acks every item. A bound XPUB in this process, plain or with a CURVE
// key of its own (not the cluster's).
class AckForger {
 public:
  AckForger(uint64_t count, const std::string& own = "")
      : socket_(context_, zmq::socket_type::xpub) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::xpub_verbose, 1);
    if (!own.empty()) {
      socket_.set(zmq::sockopt::curve_server, 1);
      socket_.set(zmq::sockopt::curve_secretkey, Trimmed(ReadFile(own + ".key")).c_str());
    }
    socket_.bind("tcp://127.0.0.1:*");
    address_ = socket_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this, count] { Serve(count); });
  }
  ~AckForger() {
    stop_ = true;
    thread_.join();
  }
  const std::string& address() const { return address_; }
  int hellos() const { return hellos_; }

 private:
  void Serve(uint64_t count) {
    FrameEncoder encoder;
    while (!stop_) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(50));
      zmq::message_t subscription;
      if (!socket_.recv(subscription, zmq::recv_flags::dontwait)) continue;
      const std::string topic = subscription.to_string().substr(1);
      auto hello = ParseHelloTopic(topic);
      if (!hello) continue;
      ++hellos_;
      AckMessage ack;
      ack.stream = hello->first;
      ack.hello_epoch = hello->second;
      ack.answer = HelloAnswer::kWelcome;
      ack.ranges = {{0, count}};
      ack.end_of_stream = true;
      ack.complete = true;
      zmq::message_t frame = encoder.EncodeAck(ack);
      socket_.send(frame, zmq::send_flags::none);
    }
  }
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> hellos_{0};
  std::thread thread_;
};

TEST(Curve, ForgedAcksFromAnotherKeyNeverReleaseAnItem) {
  Keys keys;
  const std::string cluster = keys.Make("cluster");
  const std::string producer_key = keys.Make("producer");
  const std::string forger_key = keys.Make("forger");
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--report",
                                    dir.File("report.json"), "--progress", "off",
                                    "--streams", "0", "--stats-interval", "0.1",
                                    "--curve-secret", cluster + ".key"});
  const std::string sink_in = sink->WaitReady()["in"];
  const Args curve = {"--curve-secret", producer_key + ".key", "--curve-server",
                      cluster + ".pub"};
  auto produce = [&](const std::string& acks, const Args& extra) {
    Args args = {"--out", ">" + sink_in, "--acks", ">" + acks, "--count", "1000",
                 "--stream", "forged", "--give-up", "3"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Start("sluice-producer", args);
  };
  {
    // Without CURVE the forgery works, which is what makes this test mean
    // something: the producer believes the stream complete and sends nothing.
    AckForger forger(1000);
    TempDir plain_dir;
    auto plain_sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--progress",
                                            "off", "--streams", "0"});
    auto producer = Start("sluice-producer",
                          {"--out", ">" + plain_sink->WaitReady()["in"], "--acks",
                           ">" + forger.address(), "--count", "1000", "--stream", "forged"});
    EXPECT_EQ(producer->Wait(kJobTimeout), 0);
    EXPECT_NE(producer->err().find("already complete"), std::string::npos) << producer->err();
    EXPECT_GT(forger.hellos(), 0);
    plain_sink->Signal(SIGTERM);
    plain_sink->Wait(std::chrono::seconds(20));
  }
  // With CURVE, a forger with a key of its own, and a plain one: the
  // producer never hears them, releases nothing and gives up with 69,
  // saying why.
  for (const std::string& own : {forger_key, std::string()}) {
    AckForger forger(1000, own);
    auto producer = produce(forger.address(), curve);
    EXPECT_EQ(producer->Wait(kJobTimeout), 69) << producer->err();
    EXPECT_EQ(forger.hellos(), 0);
    EXPECT_EQ(producer->err().find("already complete"), std::string::npos) << producer->err();
    EXPECT_NE(producer->err().find("handshake.refused: acks"), std::string::npos)
        << producer->err();
    EXPECT_GT(producer->LastCounters()["handshake_failed"].get<int>(), 0);
    EXPECT_NE(producer->err().find("handshakes failed"), std::string::npos)
        << producer->err();
    if (!own.empty()) {
      EXPECT_NE(producer->err().find("another key than --curve-server"), std::string::npos)
          << producer->err();
    }
    EXPECT_EQ(producer->LastCounters()["acked"], 0);
  }
  EXPECT_EQ(sink->LastCounters()["items_new"], 0);
  sink->Signal(SIGTERM);
  sink->Wait(std::chrono::seconds(20));
}

// A plain peer and a CURVE peer refuse each other, and both say why: a
// plain stage sending to a CURVE sink, then a CURVE stage sending to a
// plain sink.
TEST(Curve, PlainAndCurvePeersRefuseEachOtherAndBothSaySo) {
  Keys keys;
  const std::string cluster = keys.Make("cluster");
  const Args server = {"--curve-secret", cluster + ".key"};
  const Args client = {"--curve-secret", cluster + ".key", "--curve-server", cluster + ".pub"};
  struct Case {
    Args sink, stage;
    std::string sink_says, stage_says;
  };
  const std::vector<Case> cases = {
      // Whichever side sees the mismatch first closes the connection: the
      // other reads only that, and says what does it.
      {server, {}, "plain", "requires CURVE"},
      {{}, client, "CURVE client", "plain"},
  };
  for (const Case& c : cases) {
    Args sink_args = {"--in", "@tcp://127.0.0.1:*", "--progress", "off", "--streams", "0",
                      "--stats-interval", "0.1"};
    sink_args.insert(sink_args.end(), c.sink.begin(), c.sink.end());
    auto sink = Start("sluice-sink", sink_args);
    Args stage_args = {"--op", "pass", "--in", "@tcp://127.0.0.1:*", "--out",
                       ">" + sink->WaitReady()["in"], "--stats-interval", "0.1"};
    stage_args.insert(stage_args.end(), c.stage.begin(), c.stage.end());
    auto stage = Start("sluice-stage", stage_args);
    stage->WaitReady();
    EXPECT_TRUE(WaitUntilCounterAtLeast(*sink, "handshake_failed", 1)) << sink->err();
    EXPECT_TRUE(WaitUntilCounterAtLeast(*stage, "handshake_failed", 1)) << stage->err();
    EXPECT_NE(sink->err().find(c.sink_says), std::string::npos) << sink->err();
    EXPECT_NE(stage->err().find("handshake.refused: out"), std::string::npos) << stage->err();
    EXPECT_NE(stage->err().find(c.stage_says), std::string::npos) << stage->err();
    for (Process* p : {stage.get(), sink.get()}) {
      p->Signal(SIGTERM);
      EXPECT_EQ(p->Wait(std::chrono::seconds(20)), 0) << p->err();
    }
  }
}

}  // namespace
}  // namespace sluice::testing
