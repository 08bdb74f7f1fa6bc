#include "common/bounded_queue.h"

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(BoundedQueue, PopReturnsItemsInPushOrder) {
  BoundedQueue<int> q(4);
  ASSERT_TRUE(q.Push(1));
  ASSERT_TRUE(q.Push(2));
  EXPECT_EQ(q.Pop(), 1);
  EXPECT_EQ(q.Pop(), 2);
}

// Waits until thread `tid` of this process sleeps (state S in /proc: for a
// thread inside Push or Pop, that is the condition variable's wait).
bool WaitUntilAsleep(pid_t tid) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream stat(path);
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    size_t paren = text.rfind(')');
    if (paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'S') {
      return true;
    }
    std::this_thread::yield();
  }
  return false;
}

TEST(BoundedQueue, PushOnFullQueueBlocksUntilAPop) {
  BoundedQueue<int> q(2);
  ASSERT_TRUE(q.Push(1));
  ASSERT_TRUE(q.Push(2));
  std::atomic<pid_t> tid{0};
  std::atomic<bool> pushed{false};
  std::thread pusher([&] {
    tid = gettid();
    EXPECT_TRUE(q.Push(3));
    pushed = true;
  });
  while (tid == 0) std::this_thread::yield();
  // The pusher is asleep inside Push, and its item is not in the queue.
  ASSERT_TRUE(WaitUntilAsleep(tid));
  EXPECT_FALSE(pushed);
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.Pop(), 1);
  pusher.join();
  EXPECT_TRUE(pushed);
  EXPECT_EQ(q.Pop(), 2);
  EXPECT_EQ(q.Pop(), 3);
}

TEST(BoundedQueue, PopDrainsQueuedItemsAfterClose) {
  BoundedQueue<int> q(8);
  ASSERT_TRUE(q.Push(1));
  ASSERT_TRUE(q.Push(2));
  q.Close();
  EXPECT_EQ(q.Pop(), 1);
  EXPECT_EQ(q.Pop(), 2);
  EXPECT_EQ(q.Pop(), std::nullopt);
}

TEST(BoundedQueue, PushFailsAfterClose) {
  BoundedQueue<int> q(8);
  q.Close();
  EXPECT_FALSE(q.Push(1));
  EXPECT_EQ(q.size(), 0u);
}

TEST(BoundedQueue, CloseWakesBlockedConsumersAndProducers) {
  BoundedQueue<int> empty(1);
  BoundedQueue<int> full(1);
  ASSERT_TRUE(full.Push(0));
  std::thread consumer([&] { EXPECT_EQ(empty.Pop(), std::nullopt); });
  std::thread producer([&] { EXPECT_FALSE(full.Push(1)); });
  empty.Close();
  full.Close();
  consumer.join();
  producer.join();
}

TEST(BoundedQueue, PopUpToTakesWhatIsQueuedWithoutWaitingForMore) {
  BoundedQueue<int> q(16);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(q.Push(i));
  std::vector<int> out;
  EXPECT_EQ(q.PopUpTo(3, out), 3u);
  EXPECT_EQ(q.PopUpTo(10, out), 2u);
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3, 4}));
  q.Close();
  EXPECT_EQ(q.PopUpTo(10, out), 0u);
}

// Many producers and consumers: every item is delivered exactly once and the
// queue never holds more than its capacity.
TEST(BoundedQueue, ManyProducersAndConsumersDeliverEveryItemExactlyOnce) {
  constexpr int kProducers = 8, kConsumers = 6, kPerProducer = 20000;
  BoundedQueue<int> q(64);
  std::atomic<int> producers_left{kProducers};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        ASSERT_TRUE(q.Push(p * kPerProducer + i));
      }
      if (--producers_left == 0) q.Close();
    });
  }
  std::vector<std::vector<int>> got(kConsumers);
  std::atomic<bool> over_capacity{false};
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      std::vector<int> batch;
      while (true) {
        if (q.size() > q.capacity()) over_capacity = true;
        if (c % 2 == 0) {
          auto item = q.Pop();
          if (!item) break;
          got[c].push_back(*item);
        } else {
          batch.clear();
          if (q.PopUpTo(16, batch) == 0) break;
          got[c].insert(got[c].end(), batch.begin(), batch.end());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<int> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  ASSERT_EQ(all.size(), size_t{kProducers * kPerProducer});
  std::set<int> unique(all.begin(), all.end());
  EXPECT_EQ(unique.size(), all.size());
  EXPECT_FALSE(over_capacity);
}

}  // namespace
}  // namespace sluice
