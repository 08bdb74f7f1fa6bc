// include/sluice/gather.h
//
// Gather turns the items an AsyncOp is started on into batched calls, for
// ops that take batches (OpDefinition::batches, --batch N): a call is cut
// as soon as it holds OpContext::batch items, or OpContext::batch_wait after
// its first item, whichever comes first. The stage starts every item it
// has while slots are free, so a call never waits when N items are already
// there.
//
//   class Lookup : public sluice::AsyncOp {
//    public:
//     explicit Lookup(const sluice::OpContext& c)
//         : gather_(c, [this](std::vector<sluice::Gather::Entry> call) {
//             Send(std::move(call));  // One request for the whole call.
//           }) {}
//     void Start(sluice::Item& item, sluice::Completion done) override {
//       gather_.Add(item, done);
//     }
//     void Cancel(sluice::Item& item) override { gather_.Remove(item); ... }
//    private:
//     sluice::Gather gather_;
//   };
//
// Thread safety: none needed; a Gather lives on its op's loop thread (Add,
// Remove and the send callback all run there).
#ifndef SLUICE_GATHER_H_
#define SLUICE_GATHER_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "sluice/op.h"

namespace sluice {

class Gather {
 public:
  struct Entry {
    Item* item;  // Valid until `done` is called, or the item is cancelled.
    Completion done;
  };
  // Called with each call cut, 1..batch entries, in the order started.
  using Send = std::function<void(std::vector<Entry> call)>;

  // REQUIRES: context.io (an AsyncOp's context).
  Gather(const OpContext& context, Send send)
      : timer_(*context.io),
        max_(std::max<size_t>(1, context.batch)),
        wait_(context.batch_wait),
        send_(std::move(send)) {}
  Gather(const Gather&) = delete;
  Gather& operator=(const Gather&) = delete;

  size_t max() const { return max_; }

  // Adds an item to the call being gathered; sends it once full.
  void Add(Item& item, Completion done) {
    pending_.push_back({&item, done});
    if (pending_.size() >= max_) {
      Cut();
      return;
    }
    if (pending_.size() == 1) {
      timer_.expires_after(wait_);
      timer_.async_wait([this, generation = generation_](const boost::system::error_code& ec) {
        if (!ec && generation == generation_) Cut();
      });
    }
  }

  // Takes `item` out of the call being gathered (for AsyncOp::Cancel).
  // False if it is not there (already sent, or never added).
  bool Remove(Item& item) {
    auto it = std::find_if(pending_.begin(), pending_.end(),
                           [&](const Entry& e) { return e.item == &item; });
    if (it == pending_.end()) return false;
    pending_.erase(it);
    return true;
  }

 private:
  void Cut() {
    ++generation_;
    if (pending_.empty()) return;
    std::vector<Entry> call;
    call.reserve(max_);
    call.swap(pending_);
    send_(std::move(call));
  }

  boost::asio::steady_timer timer_;
  const size_t max_;
  const std::chrono::milliseconds wait_;
  const Send send_;
  std::vector<Entry> pending_;
  uint64_t generation_ = 0;  // Bumped by each cut: a stale timer does nothing.
};

}  // namespace sluice

#endif  // SLUICE_GATHER_H_
