// The ticket key ring: every generation in the token, as one immutable snapshot.
//
// A generation is a key name plus two token keys that share it as CKA_ID: the
// encryption key (per-ticket AES keys are derived from it) and the MAC key (per-ticket
// HMAC keys), with its schedule (schedule.h). A derivation-2 generation (opt-in,
// docs/DERIVATION.md) has one 64-byte key instead, which enc_key and mac_key both name.
// A ring is replaced whole when the token is rescanned, so a handshake holding a
// snapshot never sees it change.
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "keysvc/key_name.h"
#include "keysvc/schedule.h"

namespace keysvc {

struct Generation {
  KeyName name{};
  CK_OBJECT_HANDLE enc_key = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE mac_key = CK_INVALID_HANDLE;
  // The derivation (derivation.h). The strict tier, one HSM operation per ticket: 1 = two
  // HMAC-SHA256 with two keys, 2 = one HMAC-SHA512 with one key (enc_key == mac_key).
  // The epoch tier: 3 = one root key (enc_key == mac_key) from which the token derives a
  // key per epoch of `epoch_seconds`; per-ticket keys come from the epoch key in process.
  int derivation = 1;
  std::int64_t epoch_seconds = 0;  // derivation 3 only
  // This process's session-object copies of the two keys (hsm.session_copies,
  // session_key_cache.h), or CK_INVALID_HANDLE: derivation then uses the token keys.
  CK_OBJECT_HANDLE enc_copy = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE mac_copy = CK_INVALID_HANDLE;
  // The hsm::Module generation the handles above were read in (token_store::load), or
  // 0 if unknown. After a module restart they may name other objects: derivation
  // refuses them as stale (derive_ticket_keys) and the ring is read again.
  std::uint64_t module_generation = 0;
  Schedule schedule;
  // A revocation record names this generation. Its keys may already be gone; the
  // schedule then comes from the revocation record (decrypt_until: when the record
  // itself may be dropped).
  bool revoked = false;
  std::int64_t revoked_at = 0;
  // Why keysvc does not trust this generation (key_custody.h: a key without keysvc's
  // custody attributes, a schedule keysvc could not have written), or empty. A refused
  // generation is never used; it stays in the ring so that it is seen and reported.
  std::string refused;

  bool has_keys() const noexcept { return enc_key != CK_INVALID_HANDLE && mac_key != CK_INVALID_HANDLE; }
  // May encrypt or decrypt at all (at the right times).
  bool usable() const noexcept { return has_keys() && !revoked && refused.empty(); }
  // The handles derivation signs with: the session copies when both exist.
  bool has_copies() const noexcept { return enc_copy != CK_INVALID_HANDLE && mac_copy != CK_INVALID_HANDLE; }
  CK_OBJECT_HANDLE enc_signing_key() const noexcept { return has_copies() ? enc_copy : enc_key; }
  CK_OBJECT_HANDLE mac_signing_key() const noexcept { return has_copies() ? mac_copy : mac_key; }
  bool epoch_tier() const noexcept { return derivation == 3; }
  // HSM sign operations per derivation: per ticket (strict tier), per epoch (epoch tier).
  int sign_calls() const noexcept { return derivation == 1 ? 2 : 1; }
  // Whether the handles were read before a restart that made `current_module_generation`
  // (hsm::Module::generation()) current: then they may name other objects.
  bool handles_predate(std::uint64_t current_module_generation) const noexcept {
    return module_generation != 0 && module_generation != current_module_generation;
  }
};

class KeyRing {
 public:
  KeyRing() = default;
  // Orders by encrypt_from, then name, so every server sees the same order.
  explicit KeyRing(std::vector<Generation> generations);

  const std::vector<Generation>& generations() const noexcept { return generations_; }
  bool empty() const noexcept { return generations_.empty(); }

  // The generation called `name` (usable or not), or nullptr.
  const Generation* find(const KeyName& name) const noexcept;

  // The generation new tickets are issued under at `now`: of the usable generations
  // whose encrypt window has begun and that are not expired, the one whose window began
  // last; ties (two rotators racing for one window) go to the smallest name. A
  // generation thus keeps encrypting past encrypt_until only if no newer one exists
  // (the rotator is late). nullptr if none qualifies. Every server applies this rule
  // to the same token contents, so servers whose clocks agree pick the same key.
  const Generation* encrypt_generation(std::int64_t now) const noexcept;

  // Whether a ticket under `g` may be opened at `now`, allowing `skew` seconds of
  // clock difference: g is usable and now < decrypt_until + skew.
  static bool decrypts(const Generation& g, std::int64_t now, std::int64_t skew) noexcept;

  GenerationState state(const Generation& g, std::int64_t now) const noexcept;

 private:
  std::vector<Generation> generations_;
};

}  // namespace keysvc
