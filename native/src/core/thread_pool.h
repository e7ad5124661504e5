// A small fixed-size thread pool for the element-wise and row-wise CPU kernels (LayerNorm, GELU,
// softmax, residual adds) and the products (backend/cpu/kernels), which split their blocks over it.
//
// ParallelFor may be called from several threads at once (concurrent forwards on libuv's pool):
// each call queues its own chunks, the calling thread works on them too, and it returns only when
// all of its chunks are done. The calling thread helping is also what makes a nested call safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace perceiver {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs fn(begin, end) over [0, n) split into contiguous ranges of at least min_grain items.
  void ParallelFor(int64_t n, int64_t min_grain, const std::function<void(int64_t, int64_t)>& fn);

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // The process-wide pool, sized to the hardware; created on first use.
  static ThreadPool& Global();

 private:
  struct Batch;
  struct Task {
    Batch* batch;
    int64_t begin, end;
  };
  void WorkerLoop();
  static void RunTask(const Task& task);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  // Tasks in queue_, readable without the lock: workers spin on it briefly before sleeping.
  std::atomic<int64_t> queued_{0};
  bool stopping_ = false;
};

}  // namespace perceiver
