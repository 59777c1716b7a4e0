// The keys one ticket is encrypted and authenticated with, as the service hands them to
// a TLS integration (ticket_key_service.h). How they are derived: derivation.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

#include "keysvc/hsm/secure_memory.h"

namespace keysvc {

inline constexpr std::size_t kTicketKeyBytes = 32;

// A ticket's AES-256 key and HMAC-SHA256 key, in secure memory (hsm/secure_memory.h:
// locked, left out of core dumps, zeros in a forked child). Wiped on destruction; callers
// wipe it earlier with wipe() as soon as the keys are loaded into their EVP contexts.
// Construction takes a secure block and throws std::bad_alloc if none is left.
struct TicketKeys {
  TicketKeys()
      : aes_key(*new (block_.data()) std::array<std::uint8_t, kTicketKeyBytes>{}),
        hmac_key(*new (block_.data() + kTicketKeyBytes) std::array<std::uint8_t, kTicketKeyBytes>{}) {}
  TicketKeys(const TicketKeys&) = delete;
  TicketKeys& operator=(const TicketKeys&) = delete;
  ~TicketKeys() { wipe(); }
  void wipe() noexcept { block_.wipe(); }
  // aes_key || hmac_key, as one 64-byte span (derivations that produce both at once).
  std::span<std::uint8_t, 2 * kTicketKeyBytes> both() const noexcept { return block_.span(); }

 private:
  hsm::SecureBuffer<2 * kTicketKeyBytes> block_;  // first: the arrays below live in it

 public:
  std::array<std::uint8_t, kTicketKeyBytes>& aes_key;
  std::array<std::uint8_t, kTicketKeyBytes>& hmac_key;
};

}  // namespace keysvc
