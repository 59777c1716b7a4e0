#include "keysvc/hsm/secure_memory.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <mutex>
#include <string>

#include "keysvc/hsm/report.h"
#include "keysvc/hsm/thread_residue.h"

// Under AddressSanitizer free blocks are poisoned, so a use after free of a secure
// block is reported like one of the heap (ASan cannot see this allocator otherwise).
#if defined(__SANITIZE_ADDRESS__)
#define KEYSVC_SECURE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEYSVC_SECURE_ASAN 1
#endif
#endif
#ifdef KEYSVC_SECURE_ASAN
#include <sanitizer/asan_interface.h>
#define KEYSVC_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define KEYSVC_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define KEYSVC_POISON(p, n) ((void)(p), (void)(n))
#define KEYSVC_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace keysvc::hsm {

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kPagesPerRegion = 16;  // 64 KiB usable per region
constexpr std::size_t kRegionBytes = kPage * kPagesPerRegion;
constexpr std::size_t kMaxRegions = 16;      // 1 MiB per kind
constexpr std::size_t kMinBlock = 32;
constexpr std::size_t kSlotsPerPage = kPage / kMinBlock;  // at most 128 blocks in a page

// A page serves one block size (class) at a time; `used` has a bit per slot.
struct Page {
  std::uint16_t block = 0;  // block size in bytes; 0: unassigned
  std::uint16_t in_use = 0;
  std::array<std::uint64_t, kSlotsPerPage / 64> used{};
};

struct Region {
  std::uint8_t* base = nullptr;  // first usable byte (after the leading guard page)
  std::array<Page, kPagesPerRegion> pages{};
};

std::atomic<std::size_t> g_mapped{0}, g_locked{0}, g_in_use{0};
std::atomic<std::uint64_t> g_lock_failures{0}, g_advice_failures{0}, g_exhausted{0};
std::atomic<bool> g_lock_warned{false};

std::size_t block_size_for(std::size_t n) { return std::max(kMinBlock, std::bit_ceil(n)); }

std::string memlock_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return "unknown";
  if (rl.rlim_cur == RLIM_INFINITY) return "unlimited";
  return std::to_string(rl.rlim_cur / 1024) + " KiB";
}

// The blocks of one OnFork kind. Regions are only ever added (never unmapped), so the
// region table can be read without the lock by is_secure_memory().
class Arena {
 public:
  explicit Arena(OnFork on_fork) : on_fork_(on_fork) {}

  std::uint8_t* allocate(std::size_t size) {
    const std::size_t block = block_size_for(size);
    std::lock_guard lock(mutex_);
    for (std::size_t r = 0; r < count_.load(std::memory_order_relaxed); ++r)
      if (auto* p = take(regions_[r], block)) return p;
    if (count_.load(std::memory_order_relaxed) == kMaxRegions) {
      g_exhausted.fetch_add(1, std::memory_order_relaxed);
      throw std::bad_alloc();
    }
    Region& fresh = regions_[count_.load(std::memory_order_relaxed)];
    fresh.base = map_region();
    count_.fetch_add(1, std::memory_order_release);
    return take(fresh, block);
  }

  // False if p is not one of this arena's blocks.
  bool release(std::uint8_t* p) noexcept {
    Region* region = find(p, 1);
    if (region == nullptr) return false;
    const std::size_t offset = static_cast<std::size_t>(p - region->base);
    std::lock_guard lock(mutex_);
    Page& page = region->pages[offset / kPage];
    const std::size_t slot = (offset % kPage) / page.block;
    OPENSSL_cleanse(p, page.block);
    KEYSVC_POISON(p, page.block);
    page.used[slot / 64] &= ~(std::uint64_t{1} << (slot % 64));
    if (--page.in_use == 0) page.block = 0;  // free for any size again
    g_in_use.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }

  Region* find(const void* p, std::size_t n) noexcept {
    const auto* b = static_cast<const std::uint8_t*>(p);
    const std::size_t count = count_.load(std::memory_order_acquire);
    for (std::size_t r = 0; r < count; ++r) {
      std::uint8_t* base = regions_[r].base;
      if (b >= base && b + n <= base + kRegionBytes && n <= kRegionBytes) return &regions_[r];
    }
    return nullptr;
  }

  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  std::uint8_t* take(Region& region, std::size_t block) {
    Page* target = nullptr;
    for (Page& page : region.pages) {
      if (page.block == block && page.in_use < kPage / block) {
        target = &page;
        break;
      }
      if (page.block == 0 && target == nullptr) target = &page;
    }
    if (target == nullptr) return nullptr;
    target->block = static_cast<std::uint16_t>(block);
    for (std::size_t slot = 0; slot < kPage / block; ++slot) {
      std::uint64_t& word = target->used[slot / 64];
      const std::uint64_t bit = std::uint64_t{1} << (slot % 64);
      if (word & bit) continue;
      word |= bit;
      ++target->in_use;
      g_in_use.fetch_add(1, std::memory_order_relaxed);
      const std::size_t page_index = static_cast<std::size_t>(target - region.pages.data());
      std::uint8_t* p = region.base + page_index * kPage + slot * block;
      KEYSVC_UNPOISON(p, block);
      return p;  // zero: wiped on release
    }
    return nullptr;  // not reached: in_use < capacity
  }

  std::uint8_t* map_region() {
    const std::size_t total = kRegionBytes + 2 * kPage;  // a guard page on each side
    void* m = ::mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    auto* base = static_cast<std::uint8_t*>(m) + kPage;
    if (::mprotect(base, kRegionBytes, PROT_READ | PROT_WRITE) != 0) {
      ::munmap(m, total);
      throw std::bad_alloc();
    }
    KEYSVC_POISON(base, kRegionBytes);  // blocks are unpoisoned as they are handed out
    g_mapped.fetch_add(kRegionBytes, std::memory_order_relaxed);
    bool advised = ::madvise(base, kRegionBytes, MADV_DONTDUMP) == 0;
    if (on_fork_ == OnFork::kWipe) advised = ::madvise(base, kRegionBytes, MADV_WIPEONFORK) == 0 && advised;
    if (!advised) {
      g_advice_failures.fetch_add(1, std::memory_order_relaxed);
      report(ReportLevel::kWarning,
             "secure memory: the kernel refused MADV_DONTDUMP or MADV_WIPEONFORK: secrets may reach core "
             "dumps or forked children");
    }
    if (::mlock(base, kRegionBytes) == 0) {
      g_locked.fetch_add(kRegionBytes, std::memory_order_relaxed);
    } else {
      g_lock_failures.fetch_add(1, std::memory_order_relaxed);
      if (!g_lock_warned.exchange(true))
        report(ReportLevel::kWarning, "secure memory: mlock refused (RLIMIT_MEMLOCK " + memlock_limit() +
                                          "): secrets may be swapped out; raise the limit (systemd: "
                                          "LimitMEMLOCK=) to keep them in RAM");
    }
    return base;
  }

  const OnFork on_fork_;
  std::mutex mutex_;
  std::array<Region, kMaxRegions> regions_{};
  std::atomic<std::size_t> count_{0};
};

// Never destroyed: blocks may be freed by static destructors of other objects.
Arena& arena(OnFork kind) {
  static Arena* const arenas[2] = {new Arena(OnFork::kWipe), new Arena(OnFork::kKeep)};
  static std::once_flag fork_handlers;
  // The lock is held across fork(), so a child never inherits it locked by a thread
  // that does not exist there.
  std::call_once(fork_handlers, [] {
    ::pthread_atfork([] { arenas[0]->lock(), arenas[1]->lock(); },
                     [] { arenas[1]->unlock(), arenas[0]->unlock(); },
                     [] { arenas[1]->unlock(), arenas[0]->unlock(); });
  });
  return *arenas[kind == OnFork::kWipe ? 0 : 1];
}

}  // namespace

SecureBlock secure_alloc(std::size_t size, OnFork on_fork) {
  if (size == 0 || size > kMaxSecureBlock) throw std::bad_alloc();
  return SecureBlock(arena(on_fork).allocate(size), size);
}

void SecureBlock::reset() noexcept {
  if (data_ == nullptr) return;
  if (!arena(OnFork::kWipe).release(data_)) arena(OnFork::kKeep).release(data_);
  data_ = nullptr;
  size_ = 0;
}

void wipe_secure(std::uint8_t* p, std::size_t n) noexcept {
  if (p != nullptr && n > 0) OPENSSL_cleanse(p, n);
  clear_vector_registers();  // the copies the bytes left in this thread's registers
}

SecureMemoryStats secure_memory_stats() noexcept {
  SecureMemoryStats s;
  s.bytes_mapped = g_mapped.load(std::memory_order_relaxed);
  s.bytes_locked = g_locked.load(std::memory_order_relaxed);
  s.blocks_in_use = g_in_use.load(std::memory_order_relaxed);
  s.lock_failures = g_lock_failures.load(std::memory_order_relaxed);
  s.advice_failures = g_advice_failures.load(std::memory_order_relaxed);
  s.exhausted = g_exhausted.load(std::memory_order_relaxed);
  return s;
}

bool is_secure_memory(const void* p, std::size_t n) noexcept {
  return arena(OnFork::kWipe).find(p, n) != nullptr || arena(OnFork::kKeep).find(p, n) != nullptr;
}

}  // namespace keysvc::hsm
