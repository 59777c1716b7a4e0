// An epoch key (derivation 3, derivation.h) as this process holds it: the 32 bytes the
// token computed, and the two HMAC-SHA256 states they key, computed once when the key
// is set. Every ticket's HKDF-Expand is two HMACs under the epoch key; starting each from
// the stored states instead of from the key saves four of its ten SHA-256 compressions
// (docs/PERFORMANCE.md, "Where a ticket's time goes").
//
// Custody: the key and both states are equally secret (either state lets one compute
// HMACs under the key) and live in one block of secure memory (hsm/secure_memory.h:
// locked, left out of core dumps, zeros in a fork child), wiped when the EpochKey is
// destroyed. Each HMAC's working state is kept in a per-thread secure block, wiped
// before hmac() returns.
//
// The states are SHA-256's own (SHA256_CTX, OpenSSL's low-level digest functions): the
// one OpenSSL interface whose state lives in memory the caller chooses. OpenSSL 3 keeps
// these functions but marks them deprecated; they use the same SHA-256 code as the EVP
// interface (SHA-NI where the CPU has it), but run outside any provider, so a FIPS
// provider configuration does not govern this HMAC (docs/SECURITY.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>

#include "keysvc/hsm/secure_memory.h"

namespace keysvc {

inline constexpr std::size_t kEpochKeyBytes = 32;

class EpochKey {
 public:
  // An unset key (32 zero bytes). Throws std::bad_alloc if no secure memory is left.
  EpochKey();
  EpochKey(const EpochKey&) = delete;
  EpochKey& operator=(const EpochKey&) = delete;

  // Sets the key: `fill` writes its 32 bytes in place (in secure memory; the token's
  // C_Sign output goes straight there), then the HMAC states are computed. If `fill`
  // throws, the key is wiped and the exception passes on.
  template <class Fill>
  void assign(Fill&& fill) {
    try {
      fill(key_bytes());
    } catch (...) {
      wipe();
      throw;
    }
    prepare();
  }
  void assign(std::span<const std::uint8_t, kEpochKeyBytes> bytes);

  // The key's bytes (for tests that compare it with the token's result).
  std::span<const std::uint8_t, kEpochKeyBytes> span() const noexcept { return key_bytes(); }

  // out = HMAC-SHA256(key, parts[0] || parts[1] || ...). False if no secure memory is
  // left for the working state (out is then untouched).
  bool hmac(std::initializer_list<std::span<const std::uint8_t>> parts, std::uint8_t* out) const noexcept;

 private:
  std::span<std::uint8_t, kEpochKeyBytes> key_bytes() const noexcept {
    return std::span<std::uint8_t, kEpochKeyBytes>(block_.data(), kEpochKeyBytes);
  }
  void prepare() noexcept;
  void wipe() noexcept { block_.wipe(); }

  // [key: 32][inner state: SHA256_CTX][outer state: SHA256_CTX] (epoch_key.cc)
  hsm::SecureBuffer<hsm::kMaxSecureBlock> block_;
};

}  // namespace keysvc
