// make_epoch_iv (keysvc/src/derivation.cc): the layout of an epoch-tier IV, and its
// nonce, which must never repeat under one epoch key: not across the per-thread reserve's
// refills, not between threads, not between a process and its fork child.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <set>
#include <thread>
#include <vector>

#include "keysvc/derivation.h"

namespace keysvc {
namespace {

using Nonce = std::array<std::uint8_t, kIvBytes - 4>;

Nonce nonce_of(const Iv& iv) {
  Nonce n{};
  std::copy(iv.begin() + 4, iv.end(), n.begin());
  return n;
}

std::vector<Nonce> nonces(int count, std::int64_t epoch = 7) {
  std::vector<Nonce> out;
  for (int i = 0; i < count; ++i) {
    Iv iv{};
    if (!make_epoch_iv(epoch, iv)) return {};
    if (epoch_of_iv(iv, epoch) != epoch) return {};
    out.push_back(nonce_of(iv));
  }
  return out;
}

TEST(EpochIv, NoncesNeverRepeatAcrossRefillsOrThreads) {
  // The reserve holds 20: 500 per thread crosses 25 refills.
  std::vector<Nonce> a, b;
  std::thread ta([&] { a = nonces(500); });
  std::thread tb([&] { b = nonces(500); });
  ta.join();
  tb.join();
  ASSERT_EQ(a.size(), 500u);
  ASSERT_EQ(b.size(), 500u);
  std::set<Nonce> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_EQ(all.count(Nonce{}), 0u) << "a handed-out nonce is never the wiped (zero) slot";
}

TEST(EpochIv, AForkChildDrawsNoncesOfItsOwn) {
  ASSERT_EQ(nonces(3).size(), 3u);  // this thread's reserve is part used: 17 left
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // no gtest or atexit work in the child
    const std::vector<Nonce> child = nonces(5);
    const bool ok = child.size() == 5 &&
                    ::write(pipe_fds[1], child.data(), child.size() * sizeof(Nonce)) ==
                        static_cast<ssize_t>(child.size() * sizeof(Nonce));
    _exit(ok ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  std::vector<Nonce> child(5);
  const ssize_t got = ::read(pipe_fds[0], child.data(), child.size() * sizeof(Nonce));
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(got, static_cast<ssize_t>(child.size() * sizeof(Nonce)));
  // The parent's next nonces come from the reserve it had at the fork: the child must
  // not have handed out any of them.
  const std::vector<Nonce> parent = nonces(17);
  ASSERT_EQ(parent.size(), 17u);
  for (const Nonce& n : child) EXPECT_EQ(std::count(parent.begin(), parent.end(), n), 0);
}

}  // namespace
}  // namespace keysvc
