// StateFile: records survive a reopen; a torn or corrupt tail ends the log
// and is cut; a snapshot replaces the log; the lock keeps a second owner out.
#include "sink/state_file.h"

#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "tests/harness/process.h"

namespace sluice {
namespace {

using testing::ReadFile;
using testing::TempDir;

state::Record RecordWith(uint64_t output_bytes) {
  state::Record r;
  r.set_output_bytes(output_bytes);
  state::Stream* s = r.add_streams();
  s->set_id("s");
  s->add_taken(output_bytes);
  s->add_taken(output_bytes + 1);
  return r;
}

std::vector<uint64_t> Replay(StateFile& file) {
  std::vector<uint64_t> seen;
  auto n = file.Recover([&](const state::Record& r) {
    if (r.snapshot()) seen.clear();
    seen.push_back(r.output_bytes());
    return Status::Ok();
  });
  EXPECT_TRUE(n.ok());
  return seen;
}

TEST(StateFile, RecordsSurviveAReopenInOrder) {
  TempDir dir;
  {
    auto file = StateFile::Open(dir.File("state"), Durability::kProcess);
    ASSERT_TRUE(file.ok());
    ASSERT_TRUE((*file)->Start(false).ok());
    for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE((*file)->Append(RecordWith(i)).ok());
  }
  auto file = StateFile::Open(dir.File("state"), Durability::kFsync);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(Replay(**file), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ((*file)->torn_bytes(), 0u);
}

TEST(StateFile, TornOrCorruptTailEndsTheLogAndIsCutOnStart) {
  TempDir dir;
  const std::string path = dir.File("state");
  {
    auto file = StateFile::Open(path, Durability::kProcess);
    ASSERT_TRUE((*file)->Start(false).ok());
    ASSERT_TRUE((*file)->Append(RecordWith(1)).ok());
    ASSERT_TRUE((*file)->Append(RecordWith(2)).ok());
  }
  const std::string intact = ReadFile(path);
  // A record cut short by a crash, and a record whose bytes were damaged.
  { std::ofstream(path, std::ios::app) << std::string("\x20\0\0\0\x01\x02", 6); }
  {
    auto file = StateFile::Open(path, Durability::kProcess);
    EXPECT_EQ(Replay(**file), (std::vector<uint64_t>{1, 2}));
    EXPECT_EQ((*file)->torn_bytes(), 6u);
    ASSERT_TRUE((*file)->Start(false).ok());
    ASSERT_TRUE((*file)->Append(RecordWith(3)).ok());
  }
  std::string bytes = ReadFile(path);
  ASSERT_EQ(bytes.substr(0, intact.size()), intact);
  bytes[intact.size() + 9] ^= 0x40;  // Flip a bit inside record 3.
  { std::ofstream(path, std::ios::trunc) << bytes; }
  auto file = StateFile::Open(path, Durability::kProcess);
  EXPECT_EQ(Replay(**file), (std::vector<uint64_t>{1, 2}));
  EXPECT_GT((*file)->torn_bytes(), 0u);
}

TEST(StateFile, RewriteReplacesTheLogWithOneSnapshot) {
  TempDir dir;
  const std::string path = dir.File("state");
  auto file = StateFile::Open(path, Durability::kFsync);
  ASSERT_TRUE((*file)->Start(false).ok());
  for (uint64_t i = 1; i <= 5; ++i) ASSERT_TRUE((*file)->Append(RecordWith(i)).ok());
  state::Record snapshot = RecordWith(9);
  snapshot.set_snapshot(true);
  ASSERT_TRUE((*file)->Rewrite(snapshot).ok());
  ASSERT_TRUE((*file)->Append(RecordWith(10)).ok());
  EXPECT_EQ((*file)->bytes(), ReadFile(path).size());
  file->reset();
  auto reopened = StateFile::Open(path, Durability::kProcess);
  EXPECT_EQ(Replay(**reopened), (std::vector<uint64_t>{9, 10}));
}

TEST(StateFile, SecondOpenOfALockedFileIsUnavailable) {
  TempDir dir;
  auto first = StateFile::Open(dir.File("state"), Durability::kProcess);
  ASSERT_TRUE(first.ok());
  // A lock held by another process: fork a child that tries.
  pid_t child = fork();
  if (child == 0) {
    auto second = StateFile::Open(dir.File("state"), Durability::kProcess);
    _exit(!second.ok() && second.status().code() == StatusCode::kUnavailable &&
                  second.status().message().find("pid " + std::to_string(getppid())) !=
                      std::string::npos
              ? 0
              : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace sluice
