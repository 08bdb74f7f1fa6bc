#include "sink/output_writer.h"

#include <cerrno>
#include <cstring>

namespace sluice {

StatusOr<std::unique_ptr<OutputWriter>> OutputWriter::Open(
    const std::string& path, bool ordered, size_t reorder_capacity) {
  std::FILE* file = nullptr;
  if (!path.empty()) {
    file = std::fopen(path.c_str(), "we");
    if (file == nullptr) {
      return InvalidArgument("cannot write --output '" + path +
                             "': " + std::strerror(errno));
    }
    std::setvbuf(file, nullptr, _IOFBF, 1 << 20);
  }
  return std::unique_ptr<OutputWriter>(
      new OutputWriter(file, ordered, reorder_capacity));
}

OutputWriter::~OutputWriter() {
  if (file_) std::fclose(file_);
}

Status OutputWriter::Line(const std::string& payload) {
  ++written_;
  if (!file_) return Status::Ok();
  if (std::fwrite(payload.data(), 1, payload.size(), file_) != payload.size() ||
      std::fputc('\n', file_) == EOF) {
    return Unavailable(std::string("writing --output: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status OutputWriter::Drain(Pending& pending) {
  auto it = pending.items.begin();
  while (it != pending.items.end() && it->first == pending.next) {
    Status s = Line(it->second);
    if (!s.ok()) return s;
    ++pending.next;
    --buffered_;
    it = pending.items.erase(it);
  }
  return Status::Ok();
}

Status OutputWriter::Write(const std::string& stream, uint64_t seq,
                           std::string payload) {
  if (!ordered_) {
    return Line(payload);
  }
  Pending& pending = streams_[stream];
  if (seq < pending.next) {  // Its place was skipped after an overflow.
    in_order_ = false;
    return Line(payload);
  }
  if (seq != pending.next && pending.items.size() >= capacity_) {
    // Full: give up waiting for the gap below the lowest buffered item.
    in_order_ = false;
    pending.next = pending.items.begin()->first;
    Status s = Drain(pending);
    if (!s.ok()) return s;
  }
  if (seq < pending.next) {  // The overflow above just skipped past it.
    return Line(payload);
  }
  if (seq == pending.next) {
    Status s = Line(payload);
    if (!s.ok()) return s;
    ++pending.next;
    return Drain(pending);
  }
  pending.items.emplace(seq, std::move(payload));
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
  if (file_ && std::fflush(file_) != 0) {
    return Unavailable(std::string("writing --output: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status OutputWriter::FlushFile() {
  if (file_ && std::fflush(file_) != 0) {
    return Unavailable(std::string("writing --output: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status OutputWriter::FlushAll() {
  for (auto& [stream, pending] : streams_) {
    Status s = FlushStream(stream);
    if (!s.ok()) return s;
  }
  if (file_ && std::fflush(file_) != 0) {
    return Unavailable(std::string("writing --output: ") + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace sluice
