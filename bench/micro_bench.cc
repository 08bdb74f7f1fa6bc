// sluice-microbench: the per-item costs on the hot path, with Google
// Benchmark: encoding and decoding a batch frame, and the bounded queue.
#include <benchmark/benchmark.h>

#include <thread>

#include "common/bounded_queue.h"
#include "common/envelope_codec.h"

namespace sluice {
namespace {

std::vector<Item> MakeItems(size_t n) {
  std::vector<Item> items(n);
  for (size_t i = 0; i < n; ++i) {
    items[i].stream = "abcdefghijkl";
    items[i].seq = 1000000 + i;
    items[i].payload = "token_" + std::to_string(1000000 + i);
    items[i].produced_at_us = 1700000000000000 + i;
  }
  return items;
}

void BM_EncodeBatch(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  FrameEncoder encoder;
  std::vector<Item> templ = MakeItems(n);
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<Item> items = templ;
    state.ResumeTiming();
    zmq::message_t frame = encoder.EncodeBatch(items);
    benchmark::DoNotOptimize(frame.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_EncodeBatch)->Arg(1)->Arg(16)->Arg(128);

void BM_DecodeBatch(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  FrameEncoder encoder;
  std::vector<Item> items = MakeItems(n);
  zmq::message_t frame = encoder.EncodeBatch(items);
  std::vector<Item> out;
  for (auto _ : state) {
    out.clear();
    auto reject = DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out);
    benchmark::DoNotOptimize(reject);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_DecodeBatch)->Arg(1)->Arg(16)->Arg(128);

// One producer, one consumer, items moved in runs of state.range(0).
void BM_QueueHandOff(benchmark::State& state) {
  const size_t run = static_cast<size_t>(state.range(0));
  constexpr size_t kItems = 1 << 16;
  for (auto _ : state) {
    BoundedQueue<Item> q(1024);
    std::thread producer([&] {
      std::vector<Item> items(run);
      for (size_t i = 0; i < kItems; i += run) {
        items.assign(run, Item{});
        q.PushAll(items);
      }
      q.Close();
    });
    std::vector<Item> got;
    while (true) {
      got.clear();
      if (q.PopUpTo(run, got) == 0) break;
    }
    producer.join();
  }
  state.SetItemsProcessed(state.iterations() * kItems);
}
BENCHMARK(BM_QueueHandOff)->Arg(1)->Arg(64)->UseRealTime();

}  // namespace
}  // namespace sluice

BENCHMARK_MAIN();
