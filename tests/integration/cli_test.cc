// The command-line contract of docs/design.md: --help/--version, exit codes, one
// clear message for bad flags, flags over SLUICE_* environment over --config.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

const std::vector<std::string> kBinaries = {"sluice-producer", "sluice-stage",
                                            "sluice-sink"};

TEST(Cli, HelpAndVersionPrintToStdoutAndExit0) {
  for (const std::string& binary : kBinaries) {
    std::string out;
    EXPECT_EQ(RunToExit(binary, {"--help"}, &out), 0) << binary;
    EXPECT_NE(out.find("Usage: " + binary), std::string::npos) << out;
    EXPECT_NE(out.find("SLUICE_"), std::string::npos) << out;
    EXPECT_EQ(RunToExit(binary, {"--version"}, &out), 0) << binary;
    EXPECT_NE(out.find(binary + " "), std::string::npos) << out;
  }
}

TEST(Cli, UnknownFlagIsOneClearMessageAndExit64) {
  for (const std::string& binary : kBinaries) {
    std::string err;
    EXPECT_EQ(RunToExit(binary, {"--no-such-flag"}, nullptr, &err), 64) << binary;
    EXPECT_NE(err.find("no-such-flag"), std::string::npos) << err;
    EXPECT_NE(err.find("--help"), std::string::npos) << err;
  }
}

TEST(Cli, MalformedEndpointsExit64) {
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer", {"--out", "tcp://nowhere"}, nullptr, &err), 64);
  EXPECT_NE(err.find("HOST:PORT"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-stage", {"--in", "udp://x:1"}, nullptr, &err), 64);
  EXPECT_NE(err.find("udp://x:1"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-sink", {"--in", "@tcp://*:99999"}, nullptr, &err), 64);
  EXPECT_NE(err.find("99999"), std::string::npos) << err;
}

// Issue 21: a stray word and an address no host can have were accepted
// without a word.
TEST(Cli, StrayArgumentAndImpossibleAddressExit64WithOneClearMessage) {
  for (const std::string& binary : kBinaries) {
    std::string err;
    Args args = binary == "sluice-stage" ? Args{"--op", "pass", "stray"} : Args{"stray"};
    EXPECT_EQ(RunToExit(binary, args, nullptr, &err), 64) << binary;
    EXPECT_NE(err.find("unexpected argument 'stray'"), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 2) << "one message + hint: " << err;
  }
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer", {"--out", "tcp://256.1.1.1:5"}, nullptr, &err), 64);
  EXPECT_NE(err.find("'256.1.1.1'"), std::string::npos) << err;
  EXPECT_NE(err.find("IPv4"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 2) << "one message + hint: " << err;
}

TEST(Cli, ImpossibleNumbersExit64WithTheFlagNamed) {
  struct Case {
    std::string binary;
    Args args;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {"sluice-producer", {"--count", "-5"}, "--count"},
      {"sluice-producer", {"--count", "lots"}, "count"},
      {"sluice-producer", {"--hwm", "0"}, "--hwm"},
      {"sluice-producer", {"--stream", std::string(65, 's')}, "--stream"},
      {"sluice-producer", {"--count", "5", "--input", "-"}, "--input"},
      {"sluice-producer", {"--window", "0"}, "--window"},
      {"sluice-producer", {"--window-mib", "0"}, "--window-mib"},
      {"sluice-stage", {"--op", "token,result", "--threads", "10,5,1"}, "--threads"},
      {"sluice-stage", {"--op", "token", "--threads", "0"}, "--threads"},
      {"sluice-stage", {"--op", "tokn"}, "tokn"},
      {"sluice-stage", {"--op", "token", "--latency-ms", "-1"}, "--latency-ms"},
      {"sluice-stage", {"--queue", "0"}, "--queue"},
      {"sluice-stage", {"--batch-items", "0"}, "--batch-items"},
      {"sluice-sink", {"--streams", "-1"}, "--streams"},
      {"sluice-sink", {"--idle-timeout", "-2"}, "--idle-timeout"},
      {"sluice-sink", {"--ordered"}, "--output"},
      {"sluice-sink", {"--max-frame-bytes", "1"}, "--max-frame-bytes"},
      {"sluice-sink", {"--progress", "maybe"}, "--progress"},
      {"sluice-sink", {"--log-level", "loud"}, "--log-level"},
  };
  for (const Case& c : cases) {
    std::string err;
    EXPECT_EQ(RunToExit(c.binary, c.args, nullptr, &err), 64)
        << c.binary << " " << c.args[0];
    EXPECT_NE(err.find(c.mentions), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 2) << "one message + hint: " << err;
  }
}

TEST(Cli, AddressInUseExits69) {
  auto first = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--progress", "off"});
  std::string taken = first->WaitReady()["in"];
  std::string err;
  EXPECT_EQ(RunToExit("sluice-sink", {"--in", "@" + taken}, nullptr, &err), 69);
  EXPECT_NE(err.find("in use"), std::string::npos) << err;
}

// Flags over SLUICE_<FLAG> over --config FILE, end to end: the producer's
// count comes from each source in turn.
TEST(Cli, FlagsOverrideEnvironmentWhichOverridesConfigFile) {
  TempDir dir;
  std::ofstream(dir.File("producer.ini")) << "count = 7\nstream = from-config\n";
  auto run = [&](Args args, std::vector<std::string> env) {
    auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--report",
                                      dir.File("r.json"), "--progress", "off"});
    auto ready = sink->WaitReady();
    args.insert(args.begin(), {BinaryPath("sluice-producer"), "--out",
                               ">" + ready["in"], "--acks", ">" + ready["acks"],
                               "--config", dir.File("producer.ini")});
    Process producer(args, std::nullopt, env);
    EXPECT_EQ(producer.Wait(std::chrono::seconds(30)), 0) << producer.err();
    EXPECT_EQ(sink->Wait(std::chrono::seconds(30)), 0);
    auto report = ReadReport(dir.File("r.json"));
    return std::make_pair(report["expected"].get<int>(),
                          report["streams"][0]["stream"].get<std::string>());
  };
  EXPECT_EQ(run({}, {}), std::make_pair(7, std::string("from-config")));
  EXPECT_EQ(run({}, {"SLUICE_COUNT=5"}), std::make_pair(5, std::string("from-config")));
  EXPECT_EQ(run({"--count", "3"}, {"SLUICE_COUNT=5", "SLUICE_STREAM=from-env"}),
            std::make_pair(3, std::string("from-env")));
}

}  // namespace
}  // namespace sluice::testing
