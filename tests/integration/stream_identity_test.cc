// Issue 8: stream identity. A producer is an instance (epoch) of its stream
// id: a second live producer of one stream is refused before it sends
// anything, and a producer started again with the same id resumes, sending
// only what the sink does not hold.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

std::vector<std::string> SortedLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  return lines;
}

std::vector<std::string> SortedNumbers(int n) {
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) lines.push_back(std::to_string(i));
  std::sort(lines.begin(), lines.end());
  return lines;
}

// A sink taking items straight from producers, slowly enough to act
// mid-stream.
struct DirectSink {
  TempDir dir;
  std::unique_ptr<Process> sink;
  std::string in, acks;
  explicit DirectSink(const std::string& max_rate) {
    sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--output",
                                 dir.File("out.txt"), "--report",
                                 dir.File("report.json"), "--max-rate", max_rate,
                                 "--stats-interval", "0.1", "--progress", "off"});
    auto ready = sink->WaitReady();
    in = ready["in"];
    acks = ready["acks"];
  }
  Args Producer(Args extra) const {
    Args args = {"--out", ">" + in, "--acks", ">" + acks};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
};

TEST(StreamIdentity, SecondLiveProducerOfAStreamIsRefusedAndNothingIsLost) {
  constexpr int kItems = 20000;
  DirectSink sink("8000");
  auto first = Start("sluice-producer",
                     sink.Producer({"--stream", "shared", "--count",
                                    std::to_string(kItems)}));
  first->WaitReady();
  ASSERT_TRUE(WaitUntilCounterAtLeast(*sink.sink, "items_new", 1000));
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer",
                      sink.Producer({"--stream", "shared", "--count", "30000"}),
                      nullptr, &err, /*acks_off=*/false),
            69);
  EXPECT_NE(err.find("another live producer"), std::string::npos) << err;
  EXPECT_NE(err.find("Nothing was sent"), std::string::npos) << err;
  EXPECT_EQ(first->Wait(kJobTimeout), 0) << first->err();
  EXPECT_EQ(sink.sink->Wait(kJobTimeout), 0) << sink.sink->err();
  nlohmann::json report = ReadReport(sink.dir.File("report.json"));
  ExpectCompleteExactly(report, kItems, /*no_duplicates=*/false);
  EXPECT_EQ(report["out_of_range"], 0);
  EXPECT_EQ(report["errors"], 0);
  // One refusal per attempt: the second producer asks a few times.
  EXPECT_GE(sink.sink->LastCounters()["hellos_rejected"].get<int>(), 1);
}

// kill -9 of a producer reading --input FILE, then the same command again
// (no --stream: the default id is stable for the file). The restarted
// producer sends only what the sink lacks; every line is written once. A
// third start finds the stream complete and exits 0 at once.
TEST(StreamIdentity, ProducerKilledAndRestartedResumesWithoutDuplicates) {
  constexpr int kItems = 50000;
  DirectSink sink("20000");
  const std::string input = sink.dir.File("input.txt");
  {
    std::ofstream file(input);
    for (int i = 0; i < kItems; ++i) file << i << "\n";
  }
  const Args args = sink.Producer({"--input", input, "--stats-interval", "0.1"});
  auto first = Start("sluice-producer", args);
  const std::string stream = first->WaitReady()["stream"];
  ASSERT_TRUE(WaitUntilCounterAtLeast(*sink.sink, "items_new", 10000));
  first->Signal(SIGKILL);
  ASSERT_EQ(first->Wait(std::chrono::seconds(10)), 128 + SIGKILL);

  auto second = Start("sluice-producer", args);
  EXPECT_EQ(second->WaitReady()["stream"], stream);
  EXPECT_EQ(second->Wait(kJobTimeout), 0) << second->err();
  EXPECT_GE(second->LastCounters()["resumed"].get<uint64_t>(), 10000u)
      << second->err();
  EXPECT_EQ(sink.sink->Wait(kJobTimeout), 0) << sink.sink->err();
  nlohmann::json report = ReadReport(sink.dir.File("report.json"));
  ExpectCompleteExactly(report, kItems, /*no_duplicates=*/false);
  EXPECT_EQ(report["streams"].size(), 1u);
  EXPECT_EQ(SortedLines(ReadFile(sink.dir.File("out.txt"))), SortedNumbers(kItems));
}

TEST(StreamIdentity, ProducerOfAStreamTheSinkHasCompleteExitsZeroAtOnce) {
  TempDir dir;
  auto sink = Start("sluice-sink", {"--in", "@tcp://127.0.0.1:*", "--streams", "0",
                                    "--output", dir.File("out.txt")});
  auto ready = sink->WaitReady();
  Args args = {"--out", ">" + ready["in"], "--acks", ">" + ready["acks"],
               "--stream", "done", "--count", "100", "--stats-interval", "0.1"};
  ASSERT_EQ(RunToExit("sluice-producer", args, nullptr, nullptr, false), 0);
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer", args, nullptr, &err, false), 0) << err;
  EXPECT_NE(err.find("already complete at the sink"), std::string::npos) << err;
  sink->Signal(SIGTERM);
  EXPECT_EQ(sink->Wait(std::chrono::seconds(20)), 0) << sink->err();
  EXPECT_EQ(SortedLines(ReadFile(dir.File("out.txt"))), SortedNumbers(100));
}

// The default id for --input FILE follows the file: the same file gives
// the same id; an edited one a new id.
TEST(StreamIdentity, DefaultStreamIdIsStableForAnInputFileAndChangesWithIt) {
  TempDir dir;
  const std::string input = dir.File("in.txt");
  { std::ofstream(input) << "a\nb\n"; }
  auto id = [&] {
    auto p = Start("sluice-producer", {"--out", "@tcp://127.0.0.1:*", "--acks",
                                       "off", "--input", input, "--linger-ms", "0",
                                       "--peers", "1"});
    std::string stream = p->WaitReady()["stream"];
    p->Signal(SIGTERM);
    EXPECT_EQ(p->Wait(std::chrono::seconds(10)), 0) << p->err();
    return stream;
  };
  const std::string first = id();
  EXPECT_EQ(first.size(), 16u);
  EXPECT_EQ(id(), first);
  { std::ofstream(input, std::ios::app) << "c\n"; }
  EXPECT_NE(id(), first);
}

TEST(StreamIdentity, StreamIdThatIsNotPrintableUtf8IsRefusedWithExit64) {
  std::string err;
  EXPECT_EQ(RunToExit("sluice-producer", {"--stream", "bad\xff\xfe"}, nullptr, &err), 64);
  EXPECT_NE(err.find("printable UTF-8"), std::string::npos) << err;
  EXPECT_EQ(RunToExit("sluice-producer", {"--stream", "tab\there"}, nullptr, &err), 64);
}

}  // namespace
}  // namespace sluice::testing
