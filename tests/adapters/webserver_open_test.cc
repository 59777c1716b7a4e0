// A web server worker opening keysvc (keysvc/webserver/module_support.h) while someone
// else holds the lock on the keysvc config file: any local user who can read the file
// can take it, so the worker waits a bounded time and then opens without it. The open
// runs in a forked child (like a worker); the test gives it a generous minute before
// calling it hung.
#include "keysvc/webserver/module_support.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "keysvc/hsm/module.h"
#include "process.h"
#include "test_token.h"

namespace keysvc {
namespace {

// In a forked child: preloads the test token's config and opens a service with the lock
// wait bounded at `wait_ms`. Exit code: 0 opened with the lock, 1 opened without it,
// 2 not opened; 128 + N if signal N ended it; -1 if it hung (then it is killed).
int open_in_child(long wait_ms) {
  const std::string config = test::TestToken::get().config_path();
  pid_t pid = ::fork();
  if (pid == 0) {
    // This test process used the token (clear()): a worker forked from it starts the
    // module afresh, as keysvc's fork hooks do.
    hsm::Module::load(test::kSoftHsmModule)->reinitialize_after_fork();
    char err[512] = "";
    keysvc_preloaded* pre = keysvc_preload(config.c_str(), err, sizeof err);
    int held = -1;
    keysvc_service* svc = pre ? keysvc_webserver_open_within(pre, config.c_str(), wait_ms, &held, err, sizeof err)
                              : nullptr;
    ::_exit(svc == nullptr ? 2 : held == 1 ? 0 : 1);
  }
  return test::wait_for_child(pid, std::chrono::seconds(60));
}

TEST(WebserverOpen, TakesTheLockWhenFree) {
  test::TestToken::get().clear();
  EXPECT_EQ(open_in_child(1000), 0);
}

TEST(WebserverOpen, AHeldLockDelaysTheWorkerOnlyWithinItsBound) {
  test::TestToken::get().clear();
  // Another process's lock: flock conflicts between open file descriptions, and the
  // child opens the file anew.
  const int fd = ::open(test::TestToken::get().config_path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_NE(fd, -1);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  EXPECT_EQ(open_in_child(200), 1) << "the worker hung on the lock (-1) or did not open (2)";
  EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0) << "the holder still has it";
  ::close(fd);
}

}  // namespace
}  // namespace keysvc
