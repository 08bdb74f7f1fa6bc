#include "sink/ack_publisher.h"

#include <algorithm>

namespace sluice {
namespace {

// Ranges per ack frame: keeps frames far below any receiver's limit.
constexpr size_t kMaxRangesPerFrame = 8192;

}  // namespace

AckPublisher::Pending& AckPublisher::Touch(const std::string& stream,
                                           Clock::time_point now) {
  Pending& p = pending_[stream];
  if (!p.since) p.since = now;
  return p;
}

void AckPublisher::Taken(const std::string& stream, uint64_t seq,
                         Clock::time_point now) {
  if (!socket_) return;
  Touch(stream, now).seqs.push_back(seq);
}

void AckPublisher::EndOfStreamTaken(const std::string& stream,
                                    Clock::time_point now) {
  if (!socket_) return;
  Touch(stream, now).end_of_stream = true;
}

void AckPublisher::Completed(const std::string& stream, Clock::time_point now) {
  if (!socket_) return;
  complete_.emplace(stream, subscribed_.count(stream) > 0);
  Pending& p = Touch(stream, now);
  p.complete = true;
  p.end_of_stream = true;
  p.urgent = true;
}

bool AckPublisher::IsDue(const Pending& p, Clock::time_point now) const {
  return p.since && (p.urgent || p.seqs.size() >= options_.batch_items ||
                     now - *p.since >= options_.interval);
}

bool AckPublisher::Due(Clock::time_point now) const {
  for (const auto& [stream, p] : pending_) {
    if (IsDue(p, now)) return true;
  }
  return false;
}

std::optional<AckPublisher::Clock::time_point> AckPublisher::NextDue() const {
  std::optional<Clock::time_point> next;
  for (const auto& [stream, p] : pending_) {
    if (!p.since) continue;
    Clock::time_point due = p.urgent ? *p.since : *p.since + options_.interval;
    if (!next || due < *next) next = due;
  }
  return next;
}

Status AckPublisher::Publish(Clock::time_point now, bool all) {
  if (!socket_) return Status::Ok();
  for (auto& [stream, p] : pending_) {
    if (!p.since || (!all && !IsDue(p, now))) continue;
    std::sort(p.seqs.begin(), p.seqs.end());
    AckMessage ack;
    ack.stream = stream;
    size_t i = 0;
    do {
      ack.ranges.clear();
      while (i < p.seqs.size() && ack.ranges.size() < kMaxRangesPerFrame) {
        uint64_t begin = p.seqs[i];
        uint64_t end = begin + 1;
        while (++i < p.seqs.size() && p.seqs[i] <= end) {
          end = std::max(end, p.seqs[i] + 1);
        }
        ack.ranges.emplace_back(begin, end);
      }
      bool last = i >= p.seqs.size();
      ack.end_of_stream = last && p.end_of_stream;
      ack.complete = last && p.complete;
      zmq::message_t frame = encoder_.EncodeAck(ack);
      try {
        // PUB never blocks: a subscriber at its high-water mark misses the
        // ack, and the producer's replay (then our re-ack) covers it.
        (void)socket_->send(frame, zmq::send_flags::dontwait);
      } catch (const zmq::error_t& e) {
        return Internal(std::string("publishing an ack: ") + e.what());
      }
      acks_sent_.Add();
    } while (i < p.seqs.size());
    p = Pending();
  }
  return Status::Ok();
}

Status AckPublisher::ReadSubscriptions(Clock::time_point now) {
  if (!socket_) return Status::Ok();
  const std::string prefix = AckTopic("").substr(0, 3);
  zmq::message_t message;
  try {
    while (socket_->recv(message, zmq::recv_flags::dontwait)) {
      // libzmq's subscription message: 1 (subscribe) or 0, then the topic,
      // which for us is AckTopic(stream): 3 fixed bytes, length, id.
      const auto* bytes = static_cast<const char*>(message.data());
      size_t size = message.size();
      if (size < 5 || bytes[0] != 1 ||
          std::string_view(bytes + 1, 3) != prefix ||
          static_cast<size_t>(static_cast<unsigned char>(bytes[4])) != size - 5) {
        continue;  // An unsubscription or a topic that is not ours.
      }
      std::string stream(bytes + 5, size - 5);
      subscribed_[stream] = true;
      auto it = complete_.find(stream);
      if (it != complete_.end()) {
        it->second = true;
        Completed(stream, now);  // Re-send: this subscriber may have missed it.
      }
    }
  } catch (const zmq::error_t& e) {
    return Internal(std::string("reading ack subscriptions: ") + e.what());
  }
  return Status::Ok();
}

StatusOr<std::vector<std::string>> AckPublisher::AwaitSubscribers(
    Clock::time_point deadline) {
  std::vector<std::string> missing;
  if (!socket_) return missing;
  while (true) {
    Status s = ReadSubscriptions(Clock::now());
    if (!s.ok()) return s;
    s = Publish(Clock::now(), true);
    if (!s.ok()) return s;
    missing.clear();
    for (const auto& [stream, subscribed] : complete_) {
      if (!subscribed) missing.push_back(stream);
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Clock::now());
    if (missing.empty() || left.count() <= 0) return missing;
    zmq::pollitem_t item = {socket_->handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, left);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) {
        return Internal(std::string("waiting for ack subscribers: ") + e.what());
      }
    }
  }
}

}  // namespace sluice
