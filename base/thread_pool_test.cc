#include "base/thread_pool.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

namespace kvstash {
namespace {

// Runs one ParallelFor and checks that every task ran exactly once, on a
// valid worker, and that no worker ran two tasks at the same time.
void ExpectEachTaskOnce(ThreadPool& pool, size_t n_tasks) {
  auto runs = std::make_unique<std::atomic<int>[]>(n_tasks);
  auto busy = std::make_unique<std::atomic<int>[]>(pool.NumWorkers());
  std::atomic<int> bad_worker{0};
  std::atomic<int> overlaps{0};
  pool.ParallelFor(n_tasks, [&](size_t task, size_t worker) {
    if (worker >= pool.NumWorkers()) {
      bad_worker.fetch_add(1);
      return;
    }
    if (busy[worker].fetch_add(1) != 0) overlaps.fetch_add(1);
    runs[task].fetch_add(1, std::memory_order_relaxed);
    busy[worker].fetch_sub(1);
  });
  EXPECT_EQ(bad_worker.load(), 0);
  EXPECT_EQ(overlaps.load(), 0);
  for (size_t i = 0; i < n_tasks; ++i) {
    ASSERT_EQ(runs[i].load(), 1) << "task " << i << " of " << n_tasks;
  }
}

TEST(ThreadPoolTest, EveryTaskRunsOnceForManyCounts) {
  for (size_t threads : {1, 2, 3, 4}) {
    ThreadPool pool({.num_threads = threads});
    ASSERT_EQ(pool.NumWorkers(), threads);
    for (size_t n : {0, 1, 2, 3, 5, 8, 17, 1000, 100000}) {
      ExpectEachTaskOnce(pool, n);
    }
  }
}

TEST(ThreadPoolTest, ManySequentialCallsSeeEachOthersWrites) {
  ThreadPool pool({.num_threads = 2});
  std::vector<int> v(64, 0);
  for (int round = 0; round < 500; ++round) {
    // Each round reads what the previous round wrote, from any worker.
    pool.ParallelFor(v.size(), [&](size_t task, size_t) {
      ASSERT_EQ(v[task], round);
      v[task] = round + 1;
    });
  }
  for (int x : v) EXPECT_EQ(x, 500);
}

TEST(ThreadPoolTest, CallerIsWorkerZeroWithOneThread) {
  ThreadPool pool({.num_threads = 1});
  size_t sum = 0;
  pool.ParallelFor(10, [&](size_t task, size_t worker) {
    EXPECT_EQ(worker, 0u);
    sum += task;
  });
  EXPECT_EQ(sum, 45u);
}

TEST(ThreadPoolTest, PerWorkerScratchNeedsNoLock) {
  ThreadPool pool({.num_threads = 2});
  std::vector<size_t> per_worker(pool.NumWorkers(), 0);
  constexpr size_t kTasks = 10000;
  pool.ParallelFor(kTasks,
                   [&](size_t, size_t worker) { ++per_worker[worker]; });
  size_t total = 0;
  for (size_t c : per_worker) total += c;
  EXPECT_EQ(total, kTasks);
}

TEST(ThreadPoolTest, MoreWorkersThanCpusStillWorks) {
  ThreadPool pool({.num_threads = 8, .pin = true});
  ExpectEachTaskOnce(pool, 5000);
}

TEST(ThreadPoolTest, PinningLeavesTheCallerAlone) {
  cpu_set_t before;
  ASSERT_EQ(sched_getaffinity(0, sizeof(before), &before), 0);
  {
    ThreadPool pool({.num_threads = 2, .pin = true});
    ExpectEachTaskOnce(pool, 100);
  }
  cpu_set_t after;
  ASSERT_EQ(sched_getaffinity(0, sizeof(after), &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&before, &after));
}

TEST(ThreadPoolTest, IdlePoolWakesFromSleep) {
  ThreadPool pool({.num_threads = 2});
  ExpectEachTaskOnce(pool, 10);
  // Long enough for the worker to stop spinning and sleep on the futex.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ExpectEachTaskOnce(pool, 10);
}

}  // namespace
}  // namespace kvstash
