#include "sink/output_writer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/harness/process.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::TempDir;

TEST(OutputWriter, OrderedRestoresSequenceOrder) {
  TempDir dir;
  auto w = OutputWriter::Open(dir.File("out"), true, 100);
  ASSERT_TRUE(w.ok());
  for (uint64_t seq : {2, 0, 3, 1}) {
    ASSERT_TRUE((*w)->Write("s", seq, "r" + std::to_string(seq)).ok());
  }
  ASSERT_TRUE((*w)->FlushAll().ok());
  EXPECT_EQ(ReadFile(dir.File("out")), "r0\nr1\nr2\nr3\n");
  EXPECT_TRUE((*w)->output_in_order());
  EXPECT_EQ((*w)->buffered(), 0u);
}

Item Result(uint64_t seq, std::string payload) {
  Item item;
  item.stream = "s";
  item.seq = seq;
  item.payload = std::move(payload);
  return item;
}

// A dropped or failed item writes nothing but keeps its place in the order;
// a fanned-out one writes all its outputs together; failed ones go to the
// dead-letter file with their reason, base64 when not UTF-8.
TEST(OutputWriter, OrderedOutputSkipsFailedAndDroppedItemsAndDeadLettersTheFailed) {
  TempDir dir;
  auto w = OutputWriter::Open(dir.File("out"), true, 100, dir.File("dead"));
  ASSERT_TRUE(w.ok());
  Item fanned = Result(3, "r3a");
  fanned.AddOutput("r3b");
  Item dropped = Result(2, "");
  dropped.Drop();
  Item failed = Result(1, std::string("\xff\x00", 2));
  failed.failure = std::make_shared<ItemFailure>(
      ItemFailure{.op = "exec", .reason = "timeout", .detail = "timeout: x",
                  .worker = "w", .attempts = 2});
  ASSERT_TRUE((*w)->Write(std::move(fanned)).ok());
  ASSERT_TRUE((*w)->Write(std::move(dropped)).ok());
  ASSERT_TRUE((*w)->Write(std::move(failed)).ok());
  ASSERT_TRUE((*w)->Write(Result(0, "r0")).ok());
  ASSERT_TRUE((*w)->FlushAll().ok());
  EXPECT_EQ(ReadFile(dir.File("out")), "r0\nr3a\nr3b\n");
  EXPECT_TRUE((*w)->output_in_order());
  EXPECT_EQ((*w)->dead_letters(), 1u);
  auto dead = nlohmann::json::parse(ReadFile(dir.File("dead")));
  EXPECT_EQ(dead["seq"], 1);
  EXPECT_EQ(dead["reason"], "timeout");
  EXPECT_EQ(dead["attempts"], 2);
  EXPECT_EQ(dead["payload_base64"], "/wA=");
  EXPECT_FALSE(dead.contains("payload"));
}

TEST(OutputWriter, UnwritableDeadLetterFileIsAClearError) {
  TempDir dir;
  auto w = OutputWriter::Open(dir.File("out"), false, 100, dir.File("no/such/dir/dead"));
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("--dead-letter"), std::string::npos);
}

TEST(OutputWriter, UnorderedWritesInArrivalOrder) {
  TempDir dir;
  auto w = OutputWriter::Open(dir.File("out"), false, 100);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write("s", 1, "b").ok());
  ASSERT_TRUE((*w)->Write("s", 0, "a").ok());
  ASSERT_TRUE((*w)->FlushAll().ok());
  EXPECT_EQ(ReadFile(dir.File("out")), "b\na\n");
}

TEST(OutputWriter, FullReorderBufferWritesPastTheGapAndLosesNothing) {
  TempDir dir;
  auto w = OutputWriter::Open(dir.File("out"), true, 2);
  ASSERT_TRUE(w.ok());
  // 0 is late: 1 and 2 fill the buffer, 3 forces them out.
  for (uint64_t seq : {1, 2, 3, 0}) {
    ASSERT_TRUE((*w)->Write("s", seq, std::to_string(seq)).ok());
  }
  ASSERT_TRUE((*w)->FlushAll().ok());
  EXPECT_EQ(ReadFile(dir.File("out")), "1\n2\n3\n0\n");
  EXPECT_FALSE((*w)->output_in_order());
  EXPECT_EQ((*w)->written(), 4u);
}

TEST(OutputWriter, ItemBelowTheBufferIsWrittenAtOnceAfterAnOverflow) {
  TempDir dir;
  auto w = OutputWriter::Open(dir.File("out"), true, 2);
  ASSERT_TRUE(w.ok());
  for (uint64_t seq : {5, 6, 3, 0}) {
    ASSERT_TRUE((*w)->Write("s", seq, std::to_string(seq)).ok());
  }
  EXPECT_EQ((*w)->buffered(), 0u);
  ASSERT_TRUE((*w)->FlushAll().ok());
  EXPECT_EQ(ReadFile(dir.File("out")), "5\n6\n3\n0\n");
}

TEST(OutputWriter, StreamsAreOrderedIndependently) {
  TempDir dir;
  auto w = OutputWriter::Open(dir.File("out"), true, 10);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write("a", 1, "a1").ok());
  ASSERT_TRUE((*w)->Write("b", 0, "b0").ok());
  ASSERT_TRUE((*w)->Write("a", 0, "a0").ok());
  ASSERT_TRUE((*w)->FlushAll().ok());
  EXPECT_EQ(ReadFile(dir.File("out")), "b0\na0\na1\n");
}

TEST(OutputWriter, UnwritablePathIsAClearError) {
  auto w = OutputWriter::Open("/nonexistent-dir/out", true, 10);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("/nonexistent-dir/out"), std::string::npos);
}

}  // namespace
}  // namespace sluice
