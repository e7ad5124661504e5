#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace perceiver {

namespace {

// A forward is hundreds of ops back to back, each split over the pool. Waking a sleeping thread
// (a futex round trip, tens of microseconds on a VM) per op left a core idle about a tenth of the
// time on the language model at batch 1; so workers, and a caller waiting for its chunks, spin
// this long first (ONNX Runtime's pool spins too). Bounded, so an idle pool sleeps. 2 ms rather
// than 200 us: on a loaded machine a worker that had gone to sleep between two ops often lost its
// core for a whole scheduler slice (language batch 1 ran on 1.5 cores in one of two runs with
// 200 us, on 1.87-1.93 with 2 ms; 2026-12-02).
constexpr auto kSpin = std::chrono::microseconds(2000);

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or kSpin has passed; true when ready.
template <typename Ready>
bool SpinUntil(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

// More chunks than threads, so a thread slowed by other work does not hold the whole op up.
constexpr int64_t kChunksPerThread = 4;

}  // namespace

struct ThreadPool::Batch {
  const std::function<void(int64_t, int64_t)>* fn;
  std::atomic<int64_t> remaining{0};
  std::mutex mutex;
  std::condition_variable done;
  std::exception_ptr error;
};

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

ThreadPool& ThreadPool::Global() {
  // Intentionally leaked: worker threads must not be joined from static destructors at exit,
  // where other threads (libuv's) may still be running a forward.
  static ThreadPool* pool = new ThreadPool(std::max(1u, std::thread::hardware_concurrency()));
  return *pool;
}

void ThreadPool::RunTask(const Task& task) {
  Batch* batch = task.batch;
  try {
    (*batch->fn)(task.begin, task.end);
  } catch (...) {
    std::lock_guard<std::mutex> lock(batch->mutex);
    if (!batch->error) batch->error = std::current_exception();
  }
  // Decrement under the lock: once the waiter can observe zero it destroys the batch, so this
  // thread must not touch the batch after releasing the lock.
  std::lock_guard<std::mutex> lock(batch->mutex);
  if (batch->remaining.fetch_sub(1) == 1) batch->done.notify_all();
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    SpinUntil([this] { return queued_.load(std::memory_order_relaxed) > 0; });
    Task task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      task = queue_.front();
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
    }
    RunTask(task);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t min_grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t grain = std::max<int64_t>(1, min_grain);
  const int64_t max_chunks = std::max<int64_t>(1, std::min<int64_t>(size() * kChunksPerThread, (n + grain - 1) / grain));
  if (max_chunks == 1) {
    fn(0, n);
    return;
  }
  Batch batch;
  batch.fn = &fn;
  const int64_t step = (n + max_chunks - 1) / max_chunks;
  std::vector<Task> tasks;
  for (int64_t begin = 0; begin < n; begin += step) tasks.push_back({&batch, begin, std::min(n, begin + step)});
  batch.remaining = static_cast<int64_t>(tasks.size());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 1; i < tasks.size(); ++i) queue_.push_back(tasks[i]);
    queued_.fetch_add(static_cast<int64_t>(tasks.size()) - 1, std::memory_order_relaxed);
  }
  cv_.notify_all();
  RunTask(tasks[0]);
  // Help with whatever is still queued (ours or another caller's) instead of sleeping.
  while (batch.remaining.load() > 0) {
    Task task;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty()) break;
      task = queue_.front();
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
    }
    RunTask(task);
  }
  SpinUntil([&] { return batch.remaining.load() == 0; });
  std::unique_lock<std::mutex> lock(batch.mutex);
  batch.done.wait(lock, [&] { return batch.remaining.load() == 0; });
  if (batch.error) std::rethrow_exception(batch.error);
}

}  // namespace perceiver
