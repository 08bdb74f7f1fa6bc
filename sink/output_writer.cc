#include "sink/output_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

namespace sluice {

namespace {

// A text field for JSON: strings from the wire need not be UTF-8.
std::string Text(const std::string& s) { return ValidUtf8(s) ? s : Base64(s); }

std::string Errno() { return std::strerror(errno); }

}  // namespace

std::string_view OutputFormatName(OutputFormat format) {
  switch (format) {
    case OutputFormat::kLines:
      return "lines";
    case OutputFormat::kJsonl:
      return "jsonl";
    case OutputFormat::kLengthPrefixed:
      return "lp";
  }
  return "lines";
}

std::optional<OutputFormat> ParseOutputFormat(std::string_view name) {
  if (name == "lines") return OutputFormat::kLines;
  if (name == "jsonl") return OutputFormat::kJsonl;
  if (name == "lp") return OutputFormat::kLengthPrefixed;
  return std::nullopt;
}

StatusOr<int> OpenLocked(const std::string& path, const char* flag) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return InvalidArgument("cannot open " + std::string(flag) + " '" + path +
                           "': " + Errno());
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return InvalidArgument(std::string(flag) + " '" + path +
                           "' is not a regular file");
  }
  struct flock lock = {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &lock) != 0) {
    int err = errno;
    struct flock holder = {};
    holder.l_type = F_WRLCK;
    holder.l_whence = SEEK_SET;
    std::string who = "another process";
    if (fcntl(fd, F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK) {
      who = "another process (pid " + std::to_string(holder.l_pid) + ")";
    }
    close(fd);
    if (err == EACCES || err == EAGAIN) {
      return Unavailable(std::string(flag) + " '" + path + "' is in use by " +
                         who + ", probably a sink started with the same "
                         "flags; nothing was changed");
    }
    return InvalidArgument("cannot lock " + std::string(flag) + " '" + path +
                           "': " + std::strerror(err));
  }
  return fd;
}

StatusOr<std::unique_ptr<OutputWriter>> OutputWriter::Open(
    const OutputOptions& options) {
  std::unique_ptr<OutputWriter> w(new OutputWriter(options));
  struct stat out_st = {}, dead_st = {};
  if (!options.path.empty()) {
    auto fd = OpenLocked(options.path, "--output");
    if (!fd.ok()) return fd.status();
    w->output_fd_ = *fd;
    fstat(*fd, &out_st);
    w->existing_output_ = static_cast<uint64_t>(out_st.st_size);
  }
  if (!options.dead_letter.empty()) {
    auto fd = OpenLocked(options.dead_letter, "--dead-letter");
    if (!fd.ok()) return fd.status();
    w->dead_fd_ = *fd;
    fstat(*fd, &dead_st);
    if (w->output_fd_ >= 0 && out_st.st_dev == dead_st.st_dev &&
        out_st.st_ino == dead_st.st_ino) {
      return InvalidArgument("--output and --dead-letter name the same file");
    }
    w->existing_dead_ = static_cast<uint64_t>(dead_st.st_size);
  }
  return w;
}

StatusOr<std::unique_ptr<OutputWriter>> OutputWriter::Open(
    const std::string& path, bool ordered, size_t reorder_capacity,
    const std::string& dead_letter) {
  auto w = Open(OutputOptions{.path = path,
                              .dead_letter = dead_letter,
                              .ordered = ordered,
                              .reorder_capacity = reorder_capacity});
  if (!w.ok()) return w;
  Status s = (*w)->Start(0, 0);
  if (!s.ok()) return s;
  return w;
}

Status OutputWriter::Start(uint64_t output_bytes, uint64_t dead_letter_bytes) {
  auto start = [](int fd, uint64_t bytes, uint64_t existing, const char* flag,
                  const std::string& path, std::FILE*& file) -> Status {
    if (fd < 0) return Status::Ok();
    if (existing < bytes) {
      return DataError(std::string(flag) + " '" + path + "' holds " +
                       std::to_string(existing) + " bytes, fewer than the " +
                       std::to_string(bytes) + " the sink's state says it "
                       "wrote: it was changed by something else (start anew "
                       "with --fresh)");
    }
    if (ftruncate(fd, static_cast<off_t>(bytes)) != 0 ||
        lseek(fd, 0, SEEK_END) < 0) {
      return Unavailable("cannot cut " + std::string(flag) + " '" + path +
                         "' to " + std::to_string(bytes) + " bytes: " + Errno());
    }
    file = fdopen(fd, "w");
    if (file == nullptr) {
      return Internal("fdopen " + std::string(flag) + ": " + Errno());
    }
    std::setvbuf(file, nullptr, _IOFBF, 1 << 20);
    return Status::Ok();
  };
  Status s = start(output_fd_, output_bytes, existing_output_, "--output",
                   options_.path, file_);
  if (s.ok()) {
    s = start(dead_fd_, dead_letter_bytes, existing_dead_, "--dead-letter",
              options_.dead_letter, dead_);
  }
  output_bytes_ = output_bytes;
  dead_bytes_ = dead_letter_bytes;
  return s;
}

OutputWriter::~OutputWriter() {
  // Closing also releases the locks.
  if (file_) {
    std::fclose(file_);
  } else if (output_fd_ >= 0) {
    close(output_fd_);
  }
  if (dead_) {
    std::fclose(dead_);
  } else if (dead_fd_ >= 0) {
    close(dead_fd_);
  }
}

Status OutputWriter::Put(std::FILE* file, const std::string& bytes,
                         uint64_t& counter, const char* flag) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size()) {
    return Unavailable(std::string("writing ") + flag + ": " + Errno());
  }
  counter += bytes.size();
  return Status::Ok();
}

Status OutputWriter::DeadLetter(const Item& item) {
  ++dead_letters_;
  if (!dead_) return Status::Ok();
  const ItemFailure& f = *item.failure;
  nlohmann::json line = {{"stream", Text(item.stream)}, {"seq", item.seq},
                         {"op", Text(f.op)},            {"reason", Text(f.reason)},
                         {"detail", Text(f.detail)},    {"worker", Text(f.worker)},
                         {"attempts", f.attempts}};
  if (ValidUtf8(item.payload)) {
    line["payload"] = item.payload;
  } else {
    line["payload_base64"] = Base64(item.payload);
  }
  std::string text = line.dump();
  text += '\n';
  return Put(dead_, text, dead_bytes_, "--dead-letter");
}

Status OutputWriter::Lines(const Item& item) {
  if (item.output_count() == 0) return Status::Ok();
  Status s = Output(item, 0, item.payload);
  for (size_t i = 0; s.ok() && i < item.more_payloads.size(); ++i) {
    s = Output(item, i + 1, item.more_payloads[i]);
  }
  return s;
}

Status OutputWriter::Output(const Item& item, size_t part,
                            const std::string& payload) {
  ++written_;
  if (!file_) return Status::Ok();
  scratch_.clear();
  switch (options_.format) {
    case OutputFormat::kLines:
      scratch_.reserve(payload.size() + 1);
      scratch_.append(payload);
      scratch_ += '\n';
      break;
    case OutputFormat::kJsonl: {
      nlohmann::json line = {{"stream", Text(item.stream)}, {"seq", item.seq}};
      if (!item.more_payloads.empty()) line["part"] = part;
      if (ValidUtf8(payload)) {
        line["payload"] = payload;
      } else {
        line["payload_base64"] = Base64(payload);
      }
      scratch_ = line.dump();
      scratch_ += '\n';
      break;
    }
    case OutputFormat::kLengthPrefixed: {
      const uint32_t n = static_cast<uint32_t>(payload.size());
      const char prefix[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                              static_cast<char>(n >> 8), static_cast<char>(n)};
      scratch_.append(prefix, 4);
      scratch_.append(payload);
      break;
    }
  }
  return Put(file_, scratch_, output_bytes_, "--output");
}

Status OutputWriter::Drain(Pending& pending) {
  auto it = pending.items.begin();
  while (it != pending.items.end() && it->first == pending.next) {
    Status s = Lines(it->second);
    if (!s.ok()) return s;
    ++pending.next;
    --buffered_;
    it = pending.items.erase(it);
  }
  return Status::Ok();
}

Status OutputWriter::Write(const std::string& stream, uint64_t seq,
                           std::string payload) {
  Item item;
  item.stream = stream;
  item.seq = seq;
  item.payload = std::move(payload);
  return Write(std::move(item));
}

Status OutputWriter::Write(Item item) {
  if (item.failure) {
    Status s = DeadLetter(item);
    if (!s.ok()) return s;
  }
  if (!options_.ordered) {
    return Lines(item);
  }
  const uint64_t seq = item.seq;
  Pending& pending = streams_[item.stream];
  if (seq < pending.next) {  // Its place was skipped after an overflow.
    in_order_ = false;
    return Lines(item);
  }
  if (seq != pending.next && pending.items.size() >= options_.reorder_capacity) {
    // Full: give up waiting for the gap below the lowest buffered item.
    in_order_ = false;
    pending.next = pending.items.begin()->first;
    Status s = Drain(pending);
    if (!s.ok()) return s;
  }
  if (seq < pending.next) {  // The overflow above just skipped past it.
    return Lines(item);
  }
  if (seq == pending.next) {
    Status s = Lines(item);
    if (!s.ok()) return s;
    ++pending.next;
    return Drain(pending);
  }
  newly_held_.emplace_back(item.stream, seq);
  pending.items.emplace(seq, std::move(item));
  ++buffered_;
  return Status::Ok();
}

Status OutputWriter::FlushStream(const std::string& stream) {
  auto it = streams_.find(stream);
  if (it != streams_.end()) {
    Pending& pending = it->second;
    while (!pending.items.empty()) {
      pending.next = pending.items.begin()->first;
      Status s = Drain(pending);
      if (!s.ok()) return s;
    }
  }
  return FlushFile();
}

Status OutputWriter::FlushFile() {
  if (dead_ && std::fflush(dead_) != 0) {
    return Unavailable("writing --dead-letter: " + Errno());
  }
  if (file_ && std::fflush(file_) != 0) {
    return Unavailable("writing --output: " + Errno());
  }
  return Status::Ok();
}

Status OutputWriter::Sync() {
  if (dead_ && fdatasync(fileno(dead_)) != 0) {
    return Unavailable("syncing --dead-letter: " + Errno());
  }
  if (file_ && fdatasync(fileno(file_)) != 0) {
    return Unavailable("syncing --output: " + Errno());
  }
  return Status::Ok();
}

Status OutputWriter::FlushAll() {
  for (auto& [stream, pending] : streams_) {
    Status s = FlushStream(stream);
    if (!s.ok()) return s;
  }
  return FlushFile();
}

uint64_t OutputWriter::WriteNext(const std::string& stream) const {
  auto it = streams_.find(stream);
  return it == streams_.end() ? 0 : it->second.next;
}

void OutputWriter::TakeNewlyHeld(const HeldVisitor& visit) {
  for (const auto& [stream, seq] : newly_held_) {
    auto it = streams_.find(stream);
    if (it == streams_.end()) continue;
    auto held = it->second.items.find(seq);
    if (held != it->second.items.end()) visit(stream, seq, held->second);
  }
  newly_held_.clear();
}

void OutputWriter::ForEachHeld(const HeldVisitor& visit) const {
  for (const auto& [stream, pending] : streams_) {
    for (const auto& [seq, item] : pending.items) visit(stream, seq, item);
  }
}

void OutputWriter::RestoreNext(const std::string& stream, uint64_t next) {
  Pending& pending = streams_[stream];
  pending.next = next;
  while (!pending.items.empty() && pending.items.begin()->first < next) {
    pending.items.erase(pending.items.begin());
    --buffered_;
  }
}

void OutputWriter::RestoreHeld(const std::string& stream, Item item) {
  Pending& pending = streams_[stream];
  if (item.seq < pending.next) return;  // Written since it was held.
  const uint64_t seq = item.seq;
  if (pending.items.emplace(seq, std::move(item)).second) ++buffered_;
}

}  // namespace sluice
