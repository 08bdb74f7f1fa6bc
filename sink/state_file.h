// sink/state_file.h
//
// StateFile keeps the sink's state (what it has taken of each stream) in a
// file that survives kill -9 of the sink and, with Durability::kFsync, a
// power cut. It is an append-only log of records (proto/sink_state.proto),
// each framed as [u32 length][u32 crc32][bytes], little-endian. A commit
// appends one record with one write(); a record cut short by a crash fails
// its length or checksum and ends the log: Recover() stops there and Start()
// cuts it off. When the log has grown well past the size of the state it
// describes, Rewrite() replaces it with one snapshot record, atomically
// (write a new file, rename it over the old one).
//
// Open() takes an exclusive lock on the file, so two sinks never share it.
//
// Thread safety: none; owned by the sink's thread.
#ifndef SLUICE_SINK_STATE_FILE_H_
#define SLUICE_SINK_STATE_FILE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "proto/sink_state.pb.h"

namespace sluice {

enum class Durability {
  kProcess,  // Bytes reach the operating system before an ack: survives a
             // crash or kill of the sink.
  kFsync,    // ... and the disk (fdatasync, one per commit): survives a
             // power cut too.
};

class StateFile {
 public:
  // Opens (creating) and locks `path`. kUnavailable if another process
  // holds the lock.
  static StatusOr<std::unique_ptr<StateFile>> Open(const std::string& path,
                                                   Durability durability);
  ~StateFile();
  StateFile(const StateFile&) = delete;
  StateFile& operator=(const StateFile&) = delete;

  // Reads the log from the start and hands each intact record to `apply`,
  // in order, up to the first torn or corrupt one. Returns how many records
  // it applied; the bytes after them are torn_bytes().
  StatusOr<uint64_t> Recover(
      const std::function<Status(const state::Record&)>& apply);
  uint64_t torn_bytes() const { return torn_bytes_; }
  // Bytes the file held when opened.
  uint64_t existing_bytes() const { return existing_bytes_; }

  // Cuts the file after the last intact record (everything with `fresh`)
  // and appends from there.
  Status Start(bool fresh);
  // Appends one record; with kFsync, on disk when this returns.
  Status Append(const state::Record& record);
  // Replaces the whole log with `snapshot` (which has snapshot = true).
  Status Rewrite(const state::Record& snapshot);
  // Bytes in the log now, and right after the last Rewrite().
  uint64_t bytes() const { return bytes_; }
  uint64_t snapshot_bytes() const { return snapshot_bytes_; }
  const std::string& path() const { return path_; }

 private:
  StateFile(std::string path, Durability durability, int fd)
      : path_(std::move(path)), durability_(durability), fd_(fd) {}
  static std::string Frame(const state::Record& record);
  Status WriteAll(int fd, const std::string& bytes);

  const std::string path_;
  const Durability durability_;
  int fd_;
  uint64_t existing_bytes_ = 0;
  uint64_t intact_bytes_ = 0;  // Up to the end of the last intact record.
  uint64_t torn_bytes_ = 0;
  uint64_t bytes_ = 0;
  uint64_t snapshot_bytes_ = 0;
};

}  // namespace sluice

#endif  // SLUICE_SINK_STATE_FILE_H_
