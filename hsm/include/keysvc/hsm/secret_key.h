// keysvc's long-term secret keys: 32-byte CKK_GENERIC_SECRET token keys used only for
// HMAC-SHA256 signing, generated inside the token and never extractable.
//
// Every usage attribute is set explicitly, because tokens differ in their defaults
// (SoftHSM turns CKA_WRAP and CKA_UNWRAP on unless told otherwise):
//   CKA_SENSITIVE=TRUE  CKA_EXTRACTABLE=FALSE  CKA_SIGN=TRUE  CKA_VERIFY=FALSE
//   CKA_ENCRYPT=FALSE   CKA_DECRYPT=FALSE      CKA_WRAP=FALSE CKA_UNWRAP=FALSE
//   CKA_DERIVE=FALSE    CKA_COPYABLE=FALSE     CKA_MODIFIABLE=FALSE CKA_DESTROYABLE=TRUE
//   CKA_PRIVATE=TRUE    CKA_TOKEN=TRUE
// except that Copyable::kYes (an opt-in, rotation.copyable_keys) sets CKA_COPYABLE and
// CKA_MODIFIABLE to TRUE, so that a server may make session-object copies of the key
// (hsm/session_copy.h; SoftHSM refuses C_CopyObject with a template unless the source is
// modifiable). docs/PERFORMANCE.md states what that exposes.
#pragma once

#include <p11-kit/pkcs11.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "keysvc/hsm/session.h"

namespace keysvc::hsm {

inline constexpr std::size_t kHmacKeyBytes = 32;
inline constexpr std::size_t kHmacSha256Bytes = 32;
// HMAC-SHA512 keys are 64 bytes: SoftHSM refuses keys shorter than the digest.
inline constexpr std::size_t kHmacSha512KeyBytes = 64;
inline constexpr std::size_t kHmacSha512Bytes = 64;

// Whether a generated key may be copied into session objects (see above).
enum class Copyable : bool { kNo = false, kYes = true };

// Generates a token HMAC key of `key_bytes` bytes with the attributes above
// (CKM_GENERIC_SECRET_KEY_GEN), as the token's profile says (module_profile.h): the key
// type it wants, no CKA_COPYABLE / CKA_DESTROYABLE on a PKCS#11 2.20 token, and on a token
// whose keys come from its own tool, a key this process reserved (key_reservation.h;
// UnsupportedError if there is none, or for a copyable or 64-byte key).
CK_OBJECT_HANDLE generate_hmac_key(Session& session, std::span<const std::uint8_t> id,
                                   const std::string& label, Copyable copyable = Copyable::kNo,
                                   std::size_t key_bytes = kHmacKeyBytes);

// Imports a known key value with the same attributes. For test vectors only: an
// imported key was outside the token once, so it is never "never extractable".
CK_OBJECT_HANDLE import_hmac_key(Session& session, std::span<const std::uint8_t> id,
                                 const std::string& label, std::span<const std::uint8_t> value);

// HMAC-SHA256 (CKM_SHA256_HMAC) of `data` under `key`, computed in the token.
void hmac_sha256(Session& session, CK_OBJECT_HANDLE key, std::span<const std::uint8_t> data,
                 std::span<std::uint8_t, kHmacSha256Bytes> mac);

// HMAC-SHA512 (CKM_SHA512_HMAC) of `data` under `key`, computed in the token.
void hmac_sha512(Session& session, CK_OBJECT_HANDLE key, std::span<const std::uint8_t> data,
                 std::span<std::uint8_t, kHmacSha512Bytes> mac);

// The attributes that prove custody, as the token reports them.
struct KeyCustody {
  bool sensitive = false;
  bool always_sensitive = false;
  bool extractable = true;
  bool never_extractable = false;
  bool sign = false, verify = false, encrypt = false, decrypt = false;
  bool wrap = false, unwrap = false, derive = false;
  bool copyable = false, modifiable = false;
  // False when the token does not know CKA_COPYABLE (PKCS#11 2.20): `copyable` is then
  // meaningless, and whether a copy is allowed is the token's business.
  bool copyable_known = true;
  // CKA_LOCAL: the token generated the key itself (C_GenerateKey), rather than taking its
  // value from outside (C_CreateObject, C_UnwrapKey). `local_known` is false when the
  // token does not report it.
  bool local = false;
  bool local_known = true;
  // False when the token keeps these attributes as metadata without enforcing them
  // (tpm2-pkcs11): they then prove what the key was made with, not what it can do.
  bool enforced = true;
  // True when the key can never leave the token: sensitive, not extractable, and
  // it was never otherwise (always sensitive, never extractable).
  bool held_in_token() const noexcept {
    return sensitive && always_sensitive && !extractable && never_extractable && !wrap;
  }
};
KeyCustody read_custody(Session& session, CK_OBJECT_HANDLE key);

}  // namespace keysvc::hsm
