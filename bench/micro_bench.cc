// sluice-microbench: the per-item costs on the hot path, with Google
// Benchmark: encoding a batch frame, decoding one into a recycled run, and
// handing runs between two threads through the bounded queue.
#include <benchmark/benchmark.h>

#include <thread>

#include "common/bounded_queue.h"
#include "common/envelope_codec.h"
#include "common/frame_io.h"
#include "common/run.h"

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
  std::vector<Item> items = MakeItems(n);
  for (auto _ : state) {
    zmq::message_t frame = encoder.EncodeBatch(std::span<const Item>(items));
    benchmark::DoNotOptimize(frame.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_EncodeBatch)->Arg(1)->Arg(16)->Arg(128);

void BM_DecodeBatch(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  FrameEncoder encoder;
  std::vector<Item> items = MakeItems(n);
  zmq::message_t frame = encoder.EncodeBatch(std::span<const Item>(items));
  ItemRun out;  // Recycled, as the data plane does.
  for (auto _ : state) {
    out.Clear();
    auto reject = DecodeFrame(frame.data(), frame.size(), kDefaultMaxFrameBytes, out);
    benchmark::DoNotOptimize(reject);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_DecodeBatch)->Arg(1)->Arg(16)->Arg(128);

// One producer, one consumer, items moved in runs of state.range(0) items
// (one ItemRun per hand-off), the runs recycled through a RunPool.
void BM_QueueHandOff(benchmark::State& state) {
  const size_t run_items = static_cast<size_t>(state.range(0));
  constexpr size_t kItems = 1 << 16;
  for (auto _ : state) {
    BoundedQueue<ItemRun> q(RunCapacity(1024, run_items));
    RunPool pool;
    std::thread producer([&] {
      for (size_t i = 0; i < kItems; i += run_items) {
        ItemRun run = pool.Get();
        for (size_t k = 0; k < run_items; ++k) run.Append().seq = i + k;
        if (!q.Push(std::move(run))) break;
      }
      q.Close();
    });
    std::vector<ItemRun> got;
    while (true) {
      got.clear();
      if (q.PopUpTo(8, got) == 0) break;
      for (ItemRun& run : got) pool.Put(std::move(run));
    }
    producer.join();
  }
  state.SetItemsProcessed(state.iterations() * kItems);
}
BENCHMARK(BM_QueueHandOff)->Arg(1)->Arg(128)->UseRealTime();

}  // namespace
}  // namespace sluice

BENCHMARK_MAIN();
