// Memory for small secrets (PINs, per-ticket keys, key caches) that stays out of core
// dumps, swap and forked children.
//
// Blocks come from a few mmap()ed regions of 64 KiB, each between two PROT_NONE guard
// pages, marked MADV_DONTDUMP (left out of core dumps, gcore's included) and mlock()ed
// (never swapped out; best effort: if RLIMIT_MEMLOCK refuses, one warning goes to the
// report sink (report.h) and secure_memory_stats().lock_failures counts it). Regions of
// OnFork::kWipe blocks are also MADV_WIPEONFORK: a child made by fork() sees zeros there,
// so a prefork server's workers never share per-ticket keys and must derive their own.
// OnFork::kKeep blocks (PINs: a worker logs in again after fork) keep their content.
//
// Blocks are 32, 64, 128 or 256 bytes (a request is rounded up), zero when handed out and
// wiped when freed. At most 1 MiB of each kind exists (16 regions): a request beyond that
// throws std::bad_alloc (counted in exhausted). Thread-safe; fork-safe (the allocator's
// lock is held across fork()). Under AddressSanitizer free blocks are poisoned, so a use
// after free is reported as for the heap.
//
//   hsm::SecureBuffer<32> key;                 // 32 zero bytes, wiped on destruction
//   derive(..., key.span());                   // std::span<std::uint8_t, 32>
//   hsm::SecureBlock b = hsm::secure_alloc(n, hsm::OnFork::kKeep);   // dynamic size <= 256
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <utility>

namespace keysvc::hsm {

// What a child made by fork() sees in a block.
enum class OnFork {
  kWipe,  // zeros (MADV_WIPEONFORK): key material the child must derive again
  kKeep,  // a copy (PINs, which a child needs to log in again)
};

// The largest block secure_alloc() hands out.
inline constexpr std::size_t kMaxSecureBlock = 256;

// One block of secure memory, owned (RAII): wiped and returned when destroyed or reset.
// Move-only; a moved-from or default-constructed block is empty (data() == nullptr).
class SecureBlock {
 public:
  SecureBlock() noexcept = default;
  SecureBlock(SecureBlock&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  SecureBlock& operator=(SecureBlock&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  SecureBlock(const SecureBlock&) = delete;
  SecureBlock& operator=(const SecureBlock&) = delete;
  ~SecureBlock() { reset(); }

  std::uint8_t* data() const noexcept { return data_; }
  // The usable size: what was asked for (not the rounded-up block size).
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return data_ == nullptr; }
  std::span<std::uint8_t> span() const noexcept { return {data_, size_}; }
  // Wipes the block and gives it back (the object becomes empty).
  void reset() noexcept;

 private:
  friend SecureBlock secure_alloc(std::size_t, OnFork);
  SecureBlock(std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// A zeroed block of `size` bytes (1..kMaxSecureBlock). Throws std::bad_alloc if `size` is
// out of range, if the kind's 1 MiB is used up, or if mmap() fails.
SecureBlock secure_alloc(std::size_t size, OnFork on_fork = OnFork::kWipe);

// A fixed-size secure byte buffer: N zero bytes in secure memory, wiped when destroyed.
// For per-ticket keys (SecureBuffer<32>, or <64> for an AES + HMAC pair) and key caches.
template <std::size_t N, OnFork F = OnFork::kWipe>
class SecureBuffer {
  static_assert(N > 0 && N <= kMaxSecureBlock, "SecureBuffer holds 1..256 bytes");

 public:
  SecureBuffer() : block_(secure_alloc(N, F)) {}
  SecureBuffer(SecureBuffer&&) noexcept = default;
  SecureBuffer& operator=(SecureBuffer&&) noexcept = default;

  static constexpr std::size_t size() noexcept { return N; }
  // nullptr only in a moved-from buffer.
  std::uint8_t* data() const noexcept { return block_.data(); }
  std::span<std::uint8_t, N> span() const noexcept { return std::span<std::uint8_t, N>(block_.data(), N); }
  // Sets every byte to zero (the buffer stays usable).
  void wipe() noexcept;

 private:
  SecureBlock block_;
};

// Scratch space of the calling thread for one scope: the thread's own T (a SecureBuffer,
// or a type holding one, with wipe()), built on the thread's first use and destroyed
// (so wiped) when the thread ends, and wiped when each scope ends, whatever the path.
// For work done once per ticket, which must not take a secure block each time. Tag tells
// apart users of the same T; one scope per T and Tag at a time on a thread. Empty if no
// secure memory was left for it (tried again next time).
//
//   hsm::ThreadScratch<hsm::SecureBuffer<64>, struct MyTag> scratch;
//   if (!scratch) return false;
//   use(scratch->data());   // wiped when `scratch` goes out of scope
template <class T, class Tag = T>
class ThreadScratch {
 public:
  ThreadScratch() noexcept : value_(of_this_thread()) {}
  ~ThreadScratch() {
    if (value_ != nullptr) value_->wipe();
  }
  ThreadScratch(const ThreadScratch&) = delete;
  ThreadScratch& operator=(const ThreadScratch&) = delete;

  explicit operator bool() const noexcept { return value_ != nullptr; }
  T& operator*() const noexcept { return *value_; }
  T* operator->() const noexcept { return value_; }

 private:
  static T* of_this_thread() noexcept {
    thread_local std::optional<T> scratch;
    if (!scratch) {
      try {
        scratch.emplace();
      } catch (const std::bad_alloc&) {
        return nullptr;
      }
    }
    return &*scratch;
  }
  T* value_;
};

// What the allocator has done since the process started (both kinds together).
struct SecureMemoryStats {
  std::size_t bytes_mapped = 0;        // usable bytes in secure regions (guards excluded)
  std::size_t bytes_locked = 0;        // of those, mlock()ed
  std::size_t blocks_in_use = 0;
  std::uint64_t lock_failures = 0;     // regions mlock() refused (RLIMIT_MEMLOCK)
  std::uint64_t advice_failures = 0;   // regions madvise() refused DONTDUMP or WIPEONFORK
  std::uint64_t exhausted = 0;         // requests refused because a kind's 1 MiB was used up
};
SecureMemoryStats secure_memory_stats() noexcept;

// True if [p, p + n) lies inside one secure region (for tests and assertions).
bool is_secure_memory(const void* p, std::size_t n = 1) noexcept;

// Implementation detail of SecureBuffer::wipe().
void wipe_secure(std::uint8_t* p, std::size_t n) noexcept;

template <std::size_t N, OnFork F>
void SecureBuffer<N, F>::wipe() noexcept {
  wipe_secure(block_.data(), N);
}

}  // namespace keysvc::hsm
