// KEYSVC-TICKET-KDF contexts kept between tickets, per SSL_CTX (AdapterState).
//
// A context made and freed for every ticket is two allocations and three reference
// counts shared by every thread (the EVP_KDF's, the service's, the provider's), in
// the middle of the handshake. Parked contexts hold no key bytes: the KDF writes its
// output to the caller's buffer, and a reset context keeps nothing of the ticket.
#pragma once

#include <openssl/kdf.h>

#include <array>
#include <atomic>

namespace keysvc::openssl {

class KdfContextPool {
 public:
  // `kdf` must outlive the pool (AdapterState frees the pool first).
  explicit KdfContextPool(EVP_KDF* kdf) noexcept : kdf_(kdf) {}
  ~KdfContextPool();
  KdfContextPool(const KdfContextPool&) = delete;
  KdfContextPool& operator=(const KdfContextPool&) = delete;

  // A parked context, or a new one; nullptr if OpenSSL cannot make one.
  EVP_KDF_CTX* take() noexcept;
  // Resets `ctx` and parks it, or frees it when every slot is taken.
  void give_back(EVP_KDF_CTX* ctx) noexcept;

  // A context for one scope, given back on every path.
  class Lease {
   public:
    explicit Lease(KdfContextPool& pool) noexcept : pool_(pool), ctx_(pool.take()) {}
    ~Lease() {
      if (ctx_ != nullptr) pool_.give_back(ctx_);
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    EVP_KDF_CTX* get() const noexcept { return ctx_; }

   private:
    KdfContextPool& pool_;
    EVP_KDF_CTX* ctx_;
  };

 private:
  // Slots searched from a per-thread start, so that two threads rarely meet on one.
  static constexpr std::size_t kSlots = 8;
  EVP_KDF* kdf_;
  std::array<std::atomic<EVP_KDF_CTX*>, kSlots> slots_{};
};

}  // namespace keysvc::openssl
