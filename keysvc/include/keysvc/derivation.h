// Per-ticket key derivation, computed inside the HSM.
//
//   aes_key  = HMAC-SHA256(generation.enc_key, "keysvc ticket v1 aes-256-cbc" || 0x00 || key_name || iv)
//   hmac_key = HMAC-SHA256(generation.mac_key, "keysvc ticket v1 hmac-sha256" || 0x00 || key_name || iv)
//
// Derivation 2 (opt-in per generation, rotation.derivation = 2; docs/DERIVATION.md):
//
//   aes_key || hmac_key = HMAC-SHA512(generation.key,
//                                     "keysvc ticket v2 aes-256-cbc+hmac-sha256" || 0x00 || key_name || iv)
//
// one sign operation instead of two, under one 64-byte long-term key.
//
// The labels are ASCII without a terminator; 0x00 separates them from the fixed-size
// key name (16 bytes) and IV (16 bytes). Each ticket has a fresh random IV, so each
// ticket has its own AES-256 and HMAC-SHA256 keys, and the long-term keys never leave
// the token. docs/DERIVATION.md has the exact bytes and a test vector.
#pragma once

#include <array>
#include <new>
#include <cstdint>
#include <span>
#include <string_view>

#include "keysvc/hsm/secure_memory.h"
#include "keysvc/hsm/session.h"
#include "keysvc/key_name.h"
#include "keysvc/key_ring.h"

namespace keysvc {

inline constexpr std::string_view kAesKeyLabel = "keysvc ticket v1 aes-256-cbc";
inline constexpr std::string_view kHmacKeyLabel = "keysvc ticket v1 hmac-sha256";
inline constexpr std::string_view kTicketKeysV2Label = "keysvc ticket v2 aes-256-cbc+hmac-sha256";
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

 private:
  hsm::SecureBuffer<2 * kTicketKeyBytes> block_;  // first: the arrays below live in it

 public:
  std::array<std::uint8_t, kTicketKeyBytes>& aes_key;
  std::array<std::uint8_t, kTicketKeyBytes>& hmac_key;
};

// The message that is HMAC'd for one key: label || 0x00 || key_name || iv.
using DerivationMessage = std::array<std::uint8_t, kAesKeyLabel.size() + 1 + kKeyNameBytes + kIvBytes>;
static_assert(kAesKeyLabel.size() == kHmacKeyLabel.size());
DerivationMessage derivation_message(std::string_view label, const KeyName& name, const Iv& iv);
// Derivation 2's message: kTicketKeysV2Label || 0x00 || key_name || iv.
using DerivationMessageV2 = std::array<std::uint8_t, kTicketKeysV2Label.size() + 1 + kKeyNameBytes + kIvBytes>;
DerivationMessageV2 derivation_message_v2(const KeyName& name, const Iv& iv);

// Derives both per-ticket keys for `generation` and `iv` in the token: two HMAC-SHA256
// (derivation 1) or one HMAC-SHA512 (derivation 2), on the generation's session copies
// if it has them (same key material, same result).
// Throws hsm::Pkcs11Error; CKR_KEY_HANDLE_INVALID without any call if the generation's
// handles were read in another module generation than the session's (a restart).
void derive_ticket_keys(hsm::Session& session, const Generation& generation, const Iv& iv, TicketKeys& out);

}  // namespace keysvc
