#include "sink/ack_publisher.h"

#include <algorithm>

namespace sluice {
namespace {

// Ranges per ack frame: keeps frames far below any receiver's limit.
constexpr size_t kMaxRangesPerFrame = 8192;

}  // namespace

AckPublisher::Pending& AckPublisher::Touch(const std::string& stream,
                                           Clock::time_point now) {
  // Items come in runs of one stream: the last entry first, then the map.
  // (Entries are never erased, so the pointers stay valid.)
  if (last_ == nullptr || *last_stream_ != stream) {
    auto it = pending_.try_emplace(stream).first;
    last_stream_ = &it->first;
    last_ = &it->second;
  }
  Pending& p = *last_;
  if (!p.since) p.since = now;
  return p;
}

void AckPublisher::Taken(const std::string& stream, uint64_t seq,
                         uint32_t queued_us, uint32_t op_us,
                         Clock::time_point now) {
  if (!socket_) return;
  Pending& p = Touch(stream, now);
  p.seqs.push_back(seq);
  if (queued_us != 0 || op_us != 0) {
    p.queued_us += queued_us;
    p.op_us += op_us;
    ++p.timed_items;
  }
}

void AckPublisher::Duplicate(const std::string& stream, uint64_t seq,
                             Clock::time_point now) {
  if (!socket_) return;
  Pending& p = Touch(stream, now);
  p.seqs.push_back(seq);
  ++p.duplicates;
}

void AckPublisher::EndOfStreamTaken(const std::string& stream,
                                    Clock::time_point now) {
  if (!socket_) return;
  Touch(stream, now).end_of_stream = true;
}

void AckPublisher::Completed(const std::string& stream, Clock::time_point now) {
  if (!socket_) return;
  complete_.emplace(stream, subscribed_.count(stream) > 0);
  done_.push_back(stream);
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
  if (!answers_.empty() || !done_.empty()) return true;
  for (const auto& [stream, p] : pending_) {
    if (IsDue(p, now)) return true;
  }
  return false;
}

std::optional<AckPublisher::Clock::time_point> AckPublisher::NextDue() const {
  std::optional<Clock::time_point> next;
  if (!answers_.empty() || !done_.empty()) return Clock::now();
  for (const auto& [stream, p] : pending_) {
    if (!p.since) continue;
    Clock::time_point due = p.urgent ? *p.since : *p.since + options_.interval;
    if (!next || due < *next) next = due;
  }
  return next;
}

Status AckPublisher::Send(AckMessage& ack) {
  zmq::message_t frame = encoder_.EncodeAck(ack);
  try {
    // PUB never blocks: a subscriber at its high-water mark misses the
    // ack, and the producer's replay (then our re-ack) covers it.
    (void)socket_->send(frame, zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    return Internal(std::string("publishing an ack: ") + e.what());
  }
  counters_.acks_sent.Add();
  return Status::Ok();
}

Status AckPublisher::Answer(const std::string& stream, uint64_t epoch,
                            HelloAnswer answer) {
  AckMessage all;
  all.stream = stream;
  if (answer == HelloAnswer::kWelcome && describe_) describe_(stream, all);
  // Frames of at most kMaxRangesPerFrame ranges, the answer on the last.
  AckMessage ack;
  ack.stream = stream;
  ack.hello_epoch = epoch;
  size_t i = 0;
  do {
    const size_t n = std::min(kMaxRangesPerFrame, all.ranges.size() - i);
    ack.ranges.assign(all.ranges.begin() + i, all.ranges.begin() + i + n);
    i += n;
    const bool last = i >= all.ranges.size();
    ack.end_of_stream = last && all.end_of_stream;
    ack.complete = last && all.complete;
    ack.answer = last ? answer : HelloAnswer::kNone;
    ack.span = last ? all.span : 0;
    Status s = Send(ack);
    if (!s.ok()) return s;
  } while (i < all.ranges.size());
  return Status::Ok();
}

Status AckPublisher::Publish(Clock::time_point now, bool all) {
  if (!socket_) return Status::Ok();
  for (const Hail& hail : answers_) {
    Status s = Answer(hail.stream, hail.epoch, hail.answer);
    if (!s.ok()) return s;
  }
  answers_.clear();
  for (auto& [stream, p] : pending_) {
    if (!p.since || (!all && !IsDue(p, now))) continue;
    // Mostly in order already (one worker's runs arrive whole).
    if (!std::is_sorted(p.seqs.begin(), p.seqs.end())) {
      std::sort(p.seqs.begin(), p.seqs.end());
    }
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
      if (last) {
        ack.queued_us = p.queued_us;
        ack.op_us = p.op_us;
        ack.timed_items = p.timed_items;
        ack.duplicates = p.duplicates;
      }
      Status s = Send(ack);
      if (!s.ok()) return s;
    } while (i < p.seqs.size());
    std::vector<uint64_t> seqs = std::move(p.seqs);  // Keeps its capacity.
    seqs.clear();
    p = Pending();
    p.seqs = std::move(seqs);
  }
  // After the acks: a stage that drops a done stream's items drops only
  // what the sink has committed (Publish follows the commit).
  for (const std::string& stream : done_) {
    zmq::message_t frame(DoneTopic(stream));
    try {
      (void)socket_->send(frame, zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      return Internal(std::string("publishing a completion: ") + e.what());
    }
  }
  done_.clear();
  return Status::Ok();
}

Status AckPublisher::Apply(bool subscribe, const std::string& topic) {
  try {
    if (subscribe) {
      socket_->set(zmq::sockopt::subscribe, topic);
    } else {
      socket_->set(zmq::sockopt::unsubscribe, topic);
    }
  } catch (const zmq::error_t& e) {
    return Internal(std::string("applying a subscription: ") + e.what());
  }
  return Status::Ok();
}

void AckPublisher::Hello(const std::string& stream, uint64_t epoch) {
  auto [it, fresh] = holder_.try_emplace(stream, epoch);
  if (fresh || it->second == epoch) {
    counters_.hellos.Add();
    answers_.push_back({stream, epoch, HelloAnswer::kWelcome});
    return;
  }
  counters_.hellos_rejected.Add();
  hello_log_.Warn("stream " + stream + ": refused a second live producer "
                  "(epoch " + std::to_string(epoch) + "; epoch " +
                  std::to_string(it->second) + " is producing it)");
  answers_.push_back({stream, epoch, HelloAnswer::kRejected});
}

Status AckPublisher::ReadSubscriptions(Clock::time_point now) {
  if (!socket_) return Status::Ok();
  zmq::message_t message;
  try {
    while (socket_->recv(message, zmq::recv_flags::dontwait)) {
      // libzmq's subscription message: 1 (subscribe) or 0, then the topic.
      const auto* bytes = static_cast<const char*>(message.data());
      if (message.size() < 1 || (bytes[0] != 0 && bytes[0] != 1)) {
        counters_.rejected_subscriptions.Add();
        continue;
      }
      const bool subscribe = bytes[0] == 1;
      const std::string topic(bytes + 1, message.size() - 1);
      std::optional<std::string> stream = ParseAckTopic(topic);
      auto hello = stream ? std::nullopt : ParseHelloTopic(topic);
      auto done = stream || hello ? std::nullopt : ParseDoneTopic(topic);
      if (!stream && !hello && !done) {
        counters_.rejected_subscriptions.Add();
        reject_log_.Warn("ignored a " + std::to_string(message.size()) +
                         "-byte subscription that is neither an ack topic, "
                         "a hello nor a completion");
        continue;
      }
      auto applied = topics_.find(topic);
      if (!subscribe) {
        if (applied == topics_.end()) continue;
        if (--applied->second == 0) topics_.erase(applied);
        if (Status s = Apply(false, topic); !s.ok()) return s;
        if (hello) {
          auto holder = holder_.find(hello->first);
          if (holder != holder_.end() && holder->second == hello->second) {
            holder_.erase(holder);  // The producer is gone: the stream is free.
          }
        }
        continue;
      }
      if (applied == topics_.end() && topics_.size() >= options_.max_topics) {
        counters_.rejected_subscriptions.Add();
        reject_log_.Warn("ignored a subscription: already " +
                         std::to_string(options_.max_topics) +
                         " distinct subscriptions");
        continue;
      }
      ++topics_[topic];
      if (Status s = Apply(true, topic); !s.ok()) return s;
      if (hello) {
        Hello(hello->first, hello->second);
        continue;
      }
      if (done) {  // A stage (--acks); it may have missed the completion.
        if (complete_.count(*done)) done_.push_back(*done);
        continue;
      }
      if (subscribed_.size() < options_.max_topics) subscribed_[*stream] = true;
      auto it = complete_.find(*stream);
      if (it != complete_.end()) {
        it->second = true;
        Completed(*stream, now);  // Re-send: this subscriber may have missed it.
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
