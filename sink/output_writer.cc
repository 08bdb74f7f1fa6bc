#include "sink/output_writer.h"

#include <cerrno>
#include <cstring>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sluice {

namespace {

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

// A text field for JSON: strings from the wire need not be UTF-8.
std::string Text(const std::string& s) { return ValidUtf8(s) ? s : Base64(s); }

StatusOr<std::FILE*> OpenForWriting(const std::string& path, const char* flag) {
  std::FILE* file = std::fopen(path.c_str(), "we");
  if (file == nullptr) {
    return InvalidArgument("cannot write " + std::string(flag) + " '" + path +
                           "': " + std::strerror(errno));
  }
  std::setvbuf(file, nullptr, _IOFBF, 1 << 20);
  return file;
}

}  // namespace

StatusOr<std::unique_ptr<OutputWriter>> OutputWriter::Open(
    const std::string& path, bool ordered, size_t reorder_capacity,
    const std::string& dead_letter) {
  std::FILE* file = nullptr;
  std::FILE* dead = nullptr;
  if (!path.empty()) {
    auto opened = OpenForWriting(path, "--output");
    if (!opened.ok()) return opened.status();
    file = *opened;
  }
  if (!dead_letter.empty()) {
    auto opened = OpenForWriting(dead_letter, "--dead-letter");
    if (!opened.ok()) {
      if (file) std::fclose(file);
      return opened.status();
    }
    dead = *opened;
  }
  return std::unique_ptr<OutputWriter>(
      new OutputWriter(file, dead, ordered, reorder_capacity));
}

OutputWriter::~OutputWriter() {
  if (file_) std::fclose(file_);
  if (dead_) std::fclose(dead_);
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
  if (std::fwrite(text.data(), 1, text.size(), dead_) != text.size()) {
    return Unavailable(std::string("writing --dead-letter: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status OutputWriter::Lines(const Item& item) {
  if (item.output_count() == 0) return Status::Ok();
  Status s = Line(item.payload);
  for (size_t i = 0; s.ok() && i < item.more_payloads.size(); ++i) {
    s = Line(item.more_payloads[i]);
  }
  return s;
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
  if (!ordered_) {
    return Lines(item);
  }
  const uint64_t seq = item.seq;
  Pending& pending = streams_[item.stream];
  if (seq < pending.next) {  // Its place was skipped after an overflow.
    in_order_ = false;
    return Lines(item);
  }
  if (seq != pending.next && pending.items.size() >= capacity_) {
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
    return Unavailable(std::string("writing --dead-letter: ") + std::strerror(errno));
  }
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
  return FlushFile();
}

}  // namespace sluice
