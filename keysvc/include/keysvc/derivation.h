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
#include <cstdint>
#include <span>
#include <string_view>

#include "keysvc/epoch_key.h"
#include "keysvc/hsm/secure_memory.h"
#include "keysvc/hsm/session.h"
#include "keysvc/key_name.h"
#include "keysvc/key_ring.h"
#include "keysvc/ticket_keys.h"  // TicketKeys, kTicketKeyBytes

namespace keysvc {

inline constexpr std::string_view kAesKeyLabel = "keysvc ticket v1 aes-256-cbc";
inline constexpr std::string_view kHmacKeyLabel = "keysvc ticket v1 hmac-sha256";
inline constexpr std::string_view kTicketKeysV2Label = "keysvc ticket v2 aes-256-cbc+hmac-sha256";

// The message that is HMAC'd for one key: label || 0x00 || key_name || iv.
using DerivationMessage = std::array<std::uint8_t, kAesKeyLabel.size() + 1 + kKeyNameBytes + kIvBytes>;
static_assert(kAesKeyLabel.size() == kHmacKeyLabel.size());
DerivationMessage derivation_message(std::string_view label, const KeyName& name, const Iv& iv);
// Derivation 2's message: kTicketKeysV2Label || 0x00 || key_name || iv.
using DerivationMessageV2 = std::array<std::uint8_t, kTicketKeysV2Label.size() + 1 + kKeyNameBytes + kIvBytes>;
DerivationMessageV2 derivation_message_v2(const KeyName& name, const Iv& iv);

// ---------------------------------------------------------------- the epoch tier
//
// Derivation 3 (the default for new generations; docs/DERIVATION.md):
//
//   epoch_key        = HMAC-SHA256(generation.root, "keysvc epoch v1" || 0x00 || key_name || epoch (8, big endian))
//   aes_key||hmac_key = HKDF-Expand-SHA256(PRK = epoch_key,
//                          info = "keysvc ticket v3 aes-256-cbc+hmac-sha256" || 0x00 || key_name || iv, L = 64)
//   iv               = epoch (4 bytes, big endian, modulo 2^32) || 12 random bytes
//
// The epoch key is computed in the token (one C_Sign per generation and epoch, ahead of
// time by the maintenance thread); the per-ticket keys in this process, from the epoch key
// held in secure memory (epoch_keys.h). Epoch e covers [e * epoch_seconds, (e + 1) *
// epoch_seconds) in Unix seconds (ticket_rules.h).
inline constexpr std::string_view kEpochKeyLabel = "keysvc epoch v1";
inline constexpr std::string_view kTicketKeysV3Label = "keysvc ticket v3 aes-256-cbc+hmac-sha256";

using EpochKeyMessage = std::array<std::uint8_t, kEpochKeyLabel.size() + 1 + kKeyNameBytes + 8>;
EpochKeyMessage epoch_key_message(const KeyName& name, std::int64_t epoch);
using TicketInfoV3 = std::array<std::uint8_t, kTicketKeysV3Label.size() + 1 + kKeyNameBytes + kIvBytes>;
TicketInfoV3 ticket_info_v3(const KeyName& name, const Iv& iv);

// Sets `out` to the epoch key of `generation` (derivation 3) for `epoch`, computed in the
// token: one HMAC-SHA256 with the root key. Throws hsm::Pkcs11Error (`out` is then wiped).
void derive_epoch_key(hsm::Session& session, const Generation& generation, std::int64_t epoch, EpochKey& out);

// A ticket's keys from its generation's epoch key (HKDF-Expand-SHA256, RFC 5869), in
// this process. Throws std::runtime_error if no secure memory is left for the HMAC's
// working state (`out` is then wiped).
void derive_ticket_keys_from_epoch(const EpochKey& epoch_key, const KeyName& name, const Iv& iv, TicketKeys& out);

// A fresh IV for a ticket of `epoch`: the epoch in its first 4 bytes, then 12 random ones.
// False if the random generator fails.
bool make_epoch_iv(std::int64_t epoch, Iv& out) noexcept;
// The epoch an IV names: its 4-byte field, completed to the epoch nearest `near` (the
// current one), so the field's wrap after 2^32 epochs never matters.
std::int64_t epoch_of_iv(const Iv& iv, std::int64_t near) noexcept;

// Derives both per-ticket keys for `generation` and `iv` in the token: two HMAC-SHA256
// (derivation 1) or one HMAC-SHA512 (derivation 2), on the generation's session copies
// if it has them (same key material, same result).
// Throws hsm::Pkcs11Error; CKR_KEY_HANDLE_INVALID without any call if the generation's
// handles were read in another module generation than the session's (a restart).
void derive_ticket_keys(hsm::Session& session, const Generation& generation, const Iv& iv, TicketKeys& out);

}  // namespace keysvc
