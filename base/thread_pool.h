// ThreadPool: a fixed set of worker threads that run ParallelFor loops. It is
// the engine's only source of parallelism (one pool, passed explicitly; see
// DESIGN.md, Threads). The thread that calls ParallelFor works too, as worker
// 0, so a pool of N workers starts N - 1 threads.
//
// ParallelFor allocates nothing and takes no lock: tasks are claimed from an
// atomic counter, idle workers spin briefly and then sleep on a futex
// (std::atomic::wait), and the caller waits for the others the same way.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

namespace kvstash {

class ThreadPool {
 public:
  struct Options {
    // Workers, including the calling thread. REQUIRES: >= 1.
    size_t num_threads = 1;
    // Pin worker i to the i-th CPU that the process may run on: the
    // constructing thread (worker 0) to the first, started threads to the
    // next ones. Skipped when there are fewer allowed CPUs than workers;
    // failures of sched_setaffinity are ignored.
    bool pin = true;
  };

  explicit ThreadPool(const Options& options);
  // Stops and joins the worker threads. REQUIRES: no ParallelFor running.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t NumWorkers() const { return threads_.size() + 1; }

  // Calls fn(task, worker) once for every task in [0, n_tasks), spread over
  // the workers, and returns when all calls have returned. `worker` <
  // NumWorkers() names the thread making the call; one worker makes one call
  // at a time, so scratch indexed by worker needs no lock. Calls finish before
  // ParallelFor returns (their effects are visible to the caller).
  // REQUIRES: one ParallelFor at a time per pool, never from inside fn; fn
  // does not throw.
  template <typename Fn>
  void ParallelFor(size_t n_tasks, const Fn& fn) {
    Run(n_tasks, &CallTask<Fn>, &fn);
  }

 private:
  using TaskFn = void (*)(const void* fn, size_t task, size_t worker);

  template <typename Fn>
  static void CallTask(const void* fn, size_t task, size_t worker) {
    (*static_cast<const Fn*>(fn))(task, worker);
  }

  void Run(size_t n_tasks, TaskFn call, const void* fn);
  void WorkerLoop(size_t worker);
  // Claims and runs tasks of the current job until none is left.
  void RunTasks(size_t worker);

  // The current job: written by the caller before it publishes a new epoch_
  // (release), read by workers after they observe it (acquire).
  TaskFn call_ = nullptr;
  const void* fn_ = nullptr;
  size_t n_tasks_ = 0;
  bool stop_ = false;

  alignas(64) std::atomic<size_t> next_task_{0};
  // Bumped once per job (and once to stop); workers wait for it to change.
  alignas(64) std::atomic<uint32_t> epoch_{0};
  // Started threads that have not yet finished the current job.
  alignas(64) std::atomic<uint32_t> pending_{0};

  std::vector<std::thread> threads_;  // workers 1 .. NumWorkers() - 1
};

}  // namespace kvstash
