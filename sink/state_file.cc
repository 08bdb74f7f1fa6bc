#include "sink/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <libgen.h>

#include "sink/output_writer.h"

namespace sluice {
namespace {

// A record larger than this is corrupt (a snapshot of 1024 streams with
// full windows and reorder buffers stays far below it).
constexpr uint32_t kMaxRecordBytes = 1u << 30;

std::string Errno() { return std::strerror(errno); }

uint32_t Crc(const char* data, size_t size) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(data), static_cast<uInt>(size)));
}

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}

// Makes a rename durable: fsync of the directory holding `path`.
Status SyncDirectoryOf(const std::string& path) {
  std::string copy = path;
  int dir = open(dirname(copy.data()), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return Unavailable("opening the folder of '" + path + "': " + Errno());
  int rc = fsync(dir);
  close(dir);
  if (rc != 0) return Unavailable("syncing the folder of '" + path + "': " + Errno());
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<StateFile>> StateFile::Open(const std::string& path,
                                                     Durability durability) {
  auto fd = OpenLocked(path, "--state");
  if (!fd.ok()) return fd.status();
  std::unique_ptr<StateFile> file(new StateFile(path, durability, *fd));
  struct stat st;
  if (fstat(*fd, &st) == 0) file->existing_bytes_ = static_cast<uint64_t>(st.st_size);
  return file;
}

StateFile::~StateFile() {
  if (fd_ >= 0) close(fd_);
}

StatusOr<uint64_t> StateFile::Recover(
    const std::function<Status(const state::Record&)>& apply) {
  std::string bytes(existing_bytes_, '\0');
  size_t have = 0;
  while (have < bytes.size()) {
    ssize_t n = pread(fd_, bytes.data() + have, bytes.size() - have,
                      static_cast<off_t>(have));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Unavailable("reading --state '" + path_ + "': " + Errno());
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  bytes.resize(have);
  uint64_t applied = 0;
  size_t pos = 0;
  state::Record record;
  while (bytes.size() - pos >= 8) {
    const uint32_t size = GetU32(bytes.data() + pos);
    const uint32_t crc = GetU32(bytes.data() + pos + 4);
    if (size > kMaxRecordBytes || bytes.size() - pos - 8 < size) break;
    const char* body = bytes.data() + pos + 8;
    if (Crc(body, size) != crc) break;
    if (!record.ParseFromArray(body, static_cast<int>(size))) break;
    Status s = apply(record);
    if (!s.ok()) return s;
    ++applied;
    pos += 8 + size;
  }
  intact_bytes_ = pos;
  torn_bytes_ = bytes.size() - pos;
  return applied;
}

Status StateFile::Start(bool fresh) {
  const uint64_t keep = fresh ? 0 : intact_bytes_;
  if (ftruncate(fd_, static_cast<off_t>(keep)) != 0 ||
      lseek(fd_, 0, SEEK_END) < 0) {
    return Unavailable("cannot cut --state '" + path_ + "': " + Errno());
  }
  bytes_ = keep;
  return Status::Ok();
}

std::string StateFile::Frame(const state::Record& record) {
  std::string body = record.SerializeAsString();
  std::string out;
  out.reserve(body.size() + 8);
  PutU32(out, static_cast<uint32_t>(body.size()));
  PutU32(out, Crc(body.data(), body.size()));
  out += body;
  return out;
}

Status StateFile::WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Unavailable("writing --state '" + path_ + "': " + Errno());
    done += static_cast<size_t>(n);
  }
  if (durability_ == Durability::kFsync && fdatasync(fd) != 0) {
    return Unavailable("syncing --state '" + path_ + "': " + Errno());
  }
  return Status::Ok();
}

Status StateFile::Append(const state::Record& record) {
  std::string frame = Frame(record);
  Status s = WriteAll(fd_, frame);
  if (!s.ok()) return s;
  bytes_ += frame.size();
  return Status::Ok();
}

Status StateFile::Rewrite(const state::Record& snapshot) {
  const std::string tmp = path_ + ".tmp";
  unlink(tmp.c_str());
  auto fd = OpenLocked(tmp, "--state");
  if (!fd.ok()) return fd.status();
  std::string frame = Frame(snapshot);
  Status s = WriteAll(*fd, frame);
  if (s.ok() && rename(tmp.c_str(), path_.c_str()) != 0) {
    s = Unavailable("replacing --state '" + path_ + "': " + Errno());
  }
  if (s.ok() && durability_ == Durability::kFsync) s = SyncDirectoryOf(path_);
  if (!s.ok()) {
    close(*fd);
    unlink(tmp.c_str());
    return s;
  }
  close(fd_);  // The old log, now unlinked.
  fd_ = *fd;
  bytes_ = frame.size();
  snapshot_bytes_ = frame.size();
  return Status::Ok();
}

}  // namespace sluice
