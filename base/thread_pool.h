// ThreadPool: a fixed set of worker threads that run ParallelFor loops. It is
// the engine's only source of parallelism (one pool, passed explicitly; see
// DESIGN.md, Threads). The thread that calls ParallelFor works too, as worker
// 0, so a pool of N workers starts N - 1 threads.
//
// ParallelFor allocates nothing and takes no lock: tasks are claimed from an
// atomic counter, idle workers spin briefly and then sleep on a futex
// (std::atomic::wait), and the caller waits for the last task the same way.
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
    // Pin started thread i (worker i >= 1) to the i-th CPU that the
    // constructing thread may run on, leaving the first to the calling
    // thread, which is not pinned (that would outlive the pool). Skipped when
    // there are fewer allowed CPUs than workers; failures are ignored.
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
  // does not throw; n_tasks < 2^32.
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
  // Claims and runs tasks of the open job until none is left.
  void RunTasks(size_t worker);

  // Job protocol. job_seq_ is even while no job is open and odd while one
  // is. The caller writes the job (call_, fn_, n_tasks_, next_task_, done_)
  // only while no job is open and no worker is inside one (active_ == 0),
  // then opens it; a worker joins an open job by counting itself in active_
  // and checking that the job is still open. The caller returns once done_
  // reaches n_tasks_, without waiting for workers that found nothing to do,
  // so a worker that the OS has descheduled does not delay it.
  TaskFn call_ = nullptr;
  const void* fn_ = nullptr;
  size_t n_tasks_ = 0;
  std::atomic<bool> stop_{false};  // published by a job_seq_ change

  alignas(64) std::atomic<uint32_t> job_seq_{0};
  alignas(64) std::atomic<size_t> next_task_{0};
  alignas(64) std::atomic<uint32_t> done_{0};    // tasks finished
  alignas(64) std::atomic<uint32_t> active_{0};  // workers inside a job

  std::vector<std::thread> threads_;  // workers 1 .. NumWorkers() - 1
};

}  // namespace kvstash
