// Secure memory: zeroed and wiped blocks, out of core dumps (VmFlags dd), locked (lo),
// zeros in a forked child for OnFork::kWipe (wf), guard pages, bounds, threads, and one
// warning when mlock is refused.
#include "keysvc/hsm/secure_memory.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "keysvc/hsm/report.h"
#include "process.h"

namespace keysvc::hsm {
namespace {

bool all_zero(const std::uint8_t* p, std::size_t n) {
  return std::all_of(p, p + n, [](std::uint8_t b) { return b == 0; });
}

// The VmFlags of the mapping of this process that holds `p` (from /proc/self/smaps).
std::set<std::string> vm_flags_of(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {  // a mapping's first line
      inside = addr >= lo && addr < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream words(line.substr(8));
      std::set<std::string> flags;
      for (std::string w; words >> w;) flags.insert(w);
      return flags;
    }
  }
  return {};
}

// Whether mlock really locks pages here: AddressSanitizer's runtime intercepts mlock and
// returns 0 without calling the kernel, so in an ASan build nothing is locked and no
// limit is enforced.
bool mlock_reaches_the_kernel() {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* m = ::mmap(nullptr, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return false;
  const bool locked = ::mlock(m, static_cast<std::size_t>(page)) == 0 && vm_flags_of(m).count("lo") == 1;
  ::munmap(m, static_cast<std::size_t>(page));
  return locked;
}

TEST(SecureMemory, BuffersStartZeroAndLiveInSecurePages) {
  SecureBuffer<32> key;
  EXPECT_EQ(key.size(), 32u);
  EXPECT_TRUE(all_zero(key.data(), key.size()));
  EXPECT_TRUE(is_secure_memory(key.data(), key.size()));
  std::span<std::uint8_t, 32> s = key.span();
  std::fill(s.begin(), s.end(), 0x5a);
  key.wipe();
  EXPECT_TRUE(all_zero(key.data(), 32));
  int on_stack = 0;
  EXPECT_FALSE(is_secure_memory(&on_stack, sizeof on_stack));
}

TEST(SecureMemory, PagesAreLeftOutOfCoreDumpsAndLocked) {
  SecureBuffer<64> wiped;
  SecureBuffer<64, OnFork::kKeep> kept;
  const auto w = vm_flags_of(wiped.data());
  const auto k = vm_flags_of(kept.data());
  EXPECT_TRUE(w.count("dd")) << "MADV_DONTDUMP";
  EXPECT_TRUE(k.count("dd")) << "MADV_DONTDUMP";
  EXPECT_TRUE(w.count("wf")) << "MADV_WIPEONFORK";
  EXPECT_FALSE(k.count("wf")) << "kKeep blocks survive fork";
  // Locked unless RLIMIT_MEMLOCK refused it, which is then counted (or unless mlock never
  // reaches the kernel: AddressSanitizer builds).
  if (secure_memory_stats().lock_failures == 0 && mlock_reaches_the_kernel()) {
    EXPECT_TRUE(w.count("lo"));
    EXPECT_TRUE(k.count("lo"));
  }
  const auto stats = secure_memory_stats();
  EXPECT_EQ(stats.advice_failures, 0u);
  EXPECT_GE(stats.bytes_mapped, 2u * 65536);
}

TEST(SecureMemory, FreedBlocksAreWipedAndReused) {
  std::uint8_t* where = nullptr;
  {
    SecureBlock b = secure_alloc(100);
    EXPECT_EQ(b.size(), 100u);
    std::fill(b.data(), b.data() + b.size(), 0xee);
    where = b.data();
  }
  // The freed block is the first free one of its size: handed out again, all zero (it
  // is not zeroed when handed out, so this is the wipe on release). Not read while
  // free: under AddressSanitizer free blocks are poisoned.
  SecureBlock again = secure_alloc(128);
  ASSERT_EQ(again.data(), where);
  EXPECT_TRUE(all_zero(again.data(), 128));
  SecureBlock moved = std::move(again);
  EXPECT_TRUE(again.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(moved.data(), where);
}

TEST(SecureMemory, SizesOutOfRangeAreRefused) {
  EXPECT_THROW(secure_alloc(0), std::bad_alloc);
  EXPECT_THROW(secure_alloc(kMaxSecureBlock + 1), std::bad_alloc);
  EXPECT_NO_THROW(secure_alloc(kMaxSecureBlock));
}

TEST(SecureMemory, ForkedChildSeesZerosInWipedBlocksOnly) {
  SecureBuffer<32> key;
  SecureBuffer<32, OnFork::kKeep> pin;
  std::fill(key.data(), key.data() + 32, 0x11);
  std::fill(pin.data(), pin.data() + 32, 0x22);
  const int code = test::in_forked_child([&] {
    if (!all_zero(key.data(), 32)) return 1;  // the parent's key must not be there
    if (pin.data()[0] != 0x22 || pin.data()[31] != 0x22) return 2;
    // The child's allocator works (its lock was not inherited held) and the child's
    // own keys are its own.
    SecureBuffer<32> own;
    std::fill(own.data(), own.data() + 32, 0x33);
    return own.data()[0] == 0x33 ? 0 : 3;
  });
  EXPECT_EQ(code, 0);
  EXPECT_EQ(key.data()[0], 0x11) << "the parent keeps its key";
}

TEST(SecureMemory, AGuardPageEndsEachRegion) {
  // Fill past one region (256 blocks of 256 bytes): some block ends a region.
  std::vector<SecureBlock> blocks;
  std::uint8_t* last_of_region = nullptr;
  for (int i = 0; i < 300 && last_of_region == nullptr; ++i) {
    blocks.push_back(secure_alloc(256, OnFork::kKeep));
    std::uint8_t* p = blocks.back().data();
    if (!is_secure_memory(p + 256)) last_of_region = p;
  }
  ASSERT_NE(last_of_region, nullptr);
  EXPECT_DEATH({ last_of_region[256] = 1; }, "");
}

TEST(SecureMemory, BoundedAndCountedWhenExhausted) {
  const auto before = secure_memory_stats();
  std::vector<SecureBlock> blocks;
  try {
    for (int i = 0; i < 5000; ++i) blocks.push_back(secure_alloc(256, OnFork::kWipe));
    FAIL() << "more than 1 MiB of OnFork::kWipe blocks handed out";
  } catch (const std::bad_alloc&) {
  }
  EXPECT_LE(blocks.size(), 4096u);
  EXPECT_GE(blocks.size(), 4000u);
  EXPECT_EQ(secure_memory_stats().exhausted, before.exhausted + 1);
  blocks.clear();
  EXPECT_NO_THROW(secure_alloc(256, OnFork::kWipe)) << "freed blocks are available again";
}

TEST(SecureMemory, ThreadsGetDistinctBlocks) {
  constexpr int kThreads = 4, kRounds = 2000;
  std::atomic<int> clobbered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        SecureBuffer<32> a;
        SecureBlock b = secure_alloc(1 + (i % 200));
        std::fill(a.data(), a.data() + 32, static_cast<std::uint8_t>(t + 1));
        std::fill(b.data(), b.data() + b.size(), static_cast<std::uint8_t>(t + 1));
        std::this_thread::yield();
        if (a.data()[31] != t + 1 || b.data()[b.size() - 1] != t + 1) ++clobbered;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(clobbered.load(), 0);
}

std::mutex g_lines_mutex;
std::vector<std::string> g_lines;
void capture(ReportLevel, std::string_view line) {
  std::lock_guard lock(g_lines_mutex);
  g_lines.emplace_back(line);
}

// Without the right to lock memory (not root, RLIMIT_MEMLOCK 0) the blocks still work,
// unlocked; one warning says why, however many regions are refused.
TEST(SecureMemory, RefusedMlockWarnsOnceAndIsCounted) {
  if (!mlock_reaches_the_kernel()) GTEST_SKIP() << "mlock does not reach the kernel (AddressSanitizer intercepts it)";
  const int code = test::in_forked_child([] {
    set_report_sink(&capture);
    rlimit none{0, 0};
    if (::setrlimit(RLIMIT_MEMLOCK, &none) != 0) return 10;
    if (::getuid() == 0 && ::setuid(65534) != 0) return 11;  // root may lock regardless
    const auto before = secure_memory_stats();
    std::vector<SecureBlock> blocks;
    for (int i = 0; i < 1100; ++i) blocks.push_back(secure_alloc(256, OnFork::kKeep));  // >= 2 new regions
    const auto after = secure_memory_stats();
    if (after.lock_failures < before.lock_failures + 2) return 12;
    int warnings = 0;
    for (const auto& l : g_lines)
      if (l.find("mlock refused (RLIMIT_MEMLOCK 0 KiB)") != std::string::npos) ++warnings;
    if (warnings != 1) return 13;
    blocks.back().data()[255] = 7;  // usable all the same
    return 0;
  });
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace keysvc::hsm
