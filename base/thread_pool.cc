#include "base/thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include "base/check.h"

namespace kvstash {
namespace {

// Polls before sleeping on the futex (0.1 to 1 ms, depending on the cost of
// a pause): long enough to catch the next job of a forward pass, short enough
// not to burn a core for long when the pool is idle.
constexpr int kSpinIterations = 1 << 14;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Returns the first value of `a` for which done(value) holds, spinning first
// and then sleeping until `a` changes.
template <typename Done>
uint32_t AwaitValue(const std::atomic<uint32_t>& a, Done done) {
  for (int i = 0; i < kSpinIterations; ++i) {
    const uint32_t v = a.load(std::memory_order_acquire);
    if (done(v)) return v;
    CpuRelax();
  }
  for (;;) {
    const uint32_t v = a.load(std::memory_order_acquire);
    if (done(v)) return v;
    a.wait(v, std::memory_order_acquire);
  }
}

// CPUs the calling thread may run on, in increasing order; empty if unknown.
std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

void PinTo(pthread_t thread, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(thread, sizeof(set), &set);  // failure: stay unpinned
}

}  // namespace

ThreadPool::ThreadPool(const Options& options) {
  KV_CHECK(options.num_threads >= 1);
  std::vector<int> cpus;
  if (options.pin) {
    cpus = AllowedCpus();
    if (cpus.size() < options.num_threads) cpus.clear();
  }
  threads_.reserve(options.num_threads - 1);
  for (size_t w = 1; w < options.num_threads; ++w) {
    threads_.emplace_back([this, w] { WorkerLoop(w); });
    if (!cpus.empty()) PinTo(threads_.back().native_handle(), cpus[w]);
  }
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  job_seq_.fetch_add(1, std::memory_order_release);
  job_seq_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::Run(size_t n_tasks, TaskFn call, const void* fn) {
  if (threads_.empty() || n_tasks <= 1) {
    for (size_t task = 0; task < n_tasks; ++task) call(fn, task, 0);
    return;
  }
  KV_CHECK(n_tasks < (size_t{1} << 32));
  // Workers still inside the previous (closed) job may read its state. The
  // seq_cst load pairs with the count-in in WorkerLoop.
  if (active_.load(std::memory_order_seq_cst) != 0) {
    AwaitValue(active_, [](uint32_t v) { return v == 0; });
  }
  call_ = call;
  fn_ = fn;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  const uint32_t open = job_seq_.load(std::memory_order_relaxed) + 1;
  job_seq_.store(open, std::memory_order_seq_cst);
  job_seq_.notify_all();  // cheap when every worker is still spinning
  RunTasks(0);
  const auto all_done = static_cast<uint32_t>(n_tasks);
  AwaitValue(done_, [all_done](uint32_t v) { return v == all_done; });
  job_seq_.store(open + 1, std::memory_order_seq_cst);  // close
}

void ThreadPool::RunTasks(size_t worker) {
  for (;;) {
    const size_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) return;
    call_(fn_, task, worker);
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_tasks_) {
      done_.notify_one();
    }
  }
}

void ThreadPool::WorkerLoop(size_t worker) {
  uint32_t seen = 0;
  for (;;) {
    seen = AwaitValue(job_seq_, [seen](uint32_t v) { return v != seen; });
    if (stop_.load(std::memory_order_relaxed)) return;
    if (seen % 2 == 0) continue;  // the job closed before this worker woke
    // Counting in before re-checking pairs with the caller closing the job
    // before it reads active_ (all seq_cst): either the caller waits for
    // this worker, or this worker sees the job closed.
    active_.fetch_add(1, std::memory_order_seq_cst);
    if (job_seq_.load(std::memory_order_seq_cst) == seen) RunTasks(worker);
    if (active_.fetch_sub(1, std::memory_order_release) == 1) {
      active_.notify_one();
    }
  }
}

}  // namespace kvstash
