// The maintenance thread: periodic and requested tasks, one at a time, stop and restart
// (what the fork hooks do).
#include "keysvc/maintenance.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace keysvc {
namespace {

using namespace std::chrono_literals;

// Polls `done` for up to 10 s (a loaded CI machine may be slow to schedule the thread).
template <class F>
bool eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

TEST(Maintenance, RunsARequestedTaskOnItsThread) {
  Maintenance m;
  std::atomic<int> runs{0};
  std::atomic<bool> on_thread{false};
  auto id = m.add("t", 0ms, [&] {
    on_thread = m.on_thread();
    ++runs;
  });
  m.start();
  m.request(id);
  EXPECT_TRUE(eventually([&] { return runs == 1; }));
  EXPECT_TRUE(on_thread);
  EXPECT_FALSE(m.on_thread());
}

TEST(Maintenance, RunsPeriodicTasksRepeatedly) {
  Maintenance m;
  std::atomic<int> runs{0};
  m.add("tick", 5ms, [&] { ++runs; });
  m.start();
  EXPECT_TRUE(eventually([&] { return runs >= 3; }));
}

TEST(Maintenance, TasksNeverOverlapAndRequestsWhileBusyMakeOneMoreRun) {
  Maintenance m;
  std::atomic<int> inside{0}, overlap{0}, runs{0};
  std::atomic<bool> release{false};
  auto id = m.add("slow", 0ms, [&] {
    if (++inside > 1) ++overlap;
    while (!release) std::this_thread::sleep_for(1ms);
    --inside;
    ++runs;
  });
  auto other = m.add("other", 0ms, [&] {
    if (++inside > 1) ++overlap;
    --inside;
  });
  m.start();
  m.request(id);
  ASSERT_TRUE(eventually([&] { return inside == 1; }));
  for (int k = 0; k < 5; ++k) m.request(id);  // while it runs: folded into one more run
  m.request(other);
  release = true;
  EXPECT_TRUE(eventually([&] { return runs == 2; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(overlap, 0);
}

TEST(Maintenance, StopWaitsForTheTaskInProgressAndRequestsSurviveARestart) {
  Maintenance m;
  std::atomic<bool> started{false}, finished{false};
  std::atomic<int> later{0};
  auto slow = m.add("slow", 0ms, [&] {
    started = true;
    std::this_thread::sleep_for(30ms);
    finished = true;
  });
  auto next = m.add("next", 0ms, [&] { ++later; });
  m.start();
  m.request(slow);
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  m.stop();
  EXPECT_TRUE(finished) << "stop() returned while the task was still running";
  EXPECT_FALSE(m.running());
  m.request(next);  // while stopped: kept
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(later, 0);
  m.start();
  EXPECT_TRUE(eventually([&] { return later == 1; }));
}

TEST(Maintenance, AThrowingTaskIsLoggedAndTheThreadGoesOn) {
  Maintenance m;
  std::atomic<int> runs{0};
  auto bad = m.add("bad", 0ms, [] { throw std::runtime_error("boom"); });
  auto good = m.add("good", 0ms, [&] { ++runs; });
  m.start();
  m.request(bad);
  m.request(good);
  EXPECT_TRUE(eventually([&] { return runs == 1; }));
}

}  // namespace
}  // namespace keysvc
