// How keysvc lays out ticket key generations in the token (docs/TOKEN-LAYOUT.md).
//
// One generation = three token objects named by the 16-byte key name:
//   CKO_SECRET_KEY  CKA_ID = name, label "keysvc-ticket-enc"  32-byte HMAC key (hsm/secret_key.h)
//   CKO_SECRET_KEY  CKA_ID = name, label "keysvc-ticket-mac"  32-byte HMAC key
//   CKO_DATA        label "keysvc-generation NAME_HEX", CKA_APPLICATION "keysvc", private,
//                   CKA_VALUE = "keysvc-generation v1\ncreated=..\nencrypt_from=..\n
//                                encrypt_until=..\ndecrypt_until=..\n" (Unix seconds)
// A derivation-2 generation (opt-in, rotation.derivation = 2; derivation.h) has one key
// and a v2 record, which versions before it ignore (they never see the generation):
//   CKO_SECRET_KEY  CKA_ID = name, label "keysvc-ticket-key"  64-byte HMAC key
//   CKO_DATA        as above, CKA_VALUE = "keysvc-generation v2\n..." (same fields)
// A derivation-3 generation (the epoch tier, the default: rotation.tier = "epoch";
// derivation.h) has one root key, from which the token derives a key per epoch, and a v3
// record with the epoch length:
//   CKO_SECRET_KEY  CKA_ID = name, label "keysvc-epoch-root"  32-byte HMAC key
//   CKO_DATA        as above, CKA_VALUE = "keysvc-generation v3\n...(same fields)epoch=300\n"
// The record is written last and destroyed first: a generation exists exactly while
// its record does. (PKCS#11 data objects have no CKA_ID, so the name is in the label.)
//
// A revoked generation additionally has, until its decrypt_until has passed:
//   CKO_DATA        label "keysvc-revoked NAME_HEX", CKA_APPLICATION "keysvc", private,
//                   CKA_VALUE = "keysvc-revocation v1\nrevoked=..\ndecrypt_until=..\n"
//                               then, from this version on, "created=..\nencrypt_from=..\n
//                               encrypt_until=..\n" (the generation's schedule)
#pragma once

#include <cstdint>
#include <optional>

#include "keysvc/hsm/secret_key.h"
#include "keysvc/hsm/session.h"
#include "keysvc/key_custody.h"
#include "keysvc/key_ring.h"

namespace keysvc::token_store {

inline constexpr char kApplication[] = "keysvc";
inline constexpr char kEncKeyLabel[] = "keysvc-ticket-enc";
inline constexpr char kMacKeyLabel[] = "keysvc-ticket-mac";
inline constexpr char kTicketKeyLabel[] = "keysvc-ticket-key";  // derivation 2
inline constexpr char kEpochRootLabel[] = "keysvc-epoch-root";   // derivation 3 (the epoch tier)
inline constexpr char kRecordLabelPrefix[] = "keysvc-generation ";
inline constexpr char kRevocationLabelPrefix[] = "keysvc-revoked ";

// Reads every complete generation and every revocation record in the token. Throws
// Pkcs11Error(CKR_USER_NOT_LOGGED_IN) if the session is not logged in (another user of
// the module logged out): its searches would miss every private object and return an
// empty ring as if the token had none. That error kills the session, so
// SessionPool::run retries once on a fresh session, which logs in again.
// Every generation record with its keys is checked (key_custody.h: the record's schedule,
// each key's custody attributes under `rule`, one C_GetAttributeValue per key); one that
// fails is loaded with Generation::refused saying why, and is never usable.
KeyRing load(hsm::Session& session, const CustodyRule& rule = {});

// How a new generation's keys are made (rotation.copyable_keys, rotation.derivation).
struct KeyOptions {
  hsm::Copyable copyable = hsm::Copyable::kNo;  // may be copied into session objects
  // 1: two 32-byte keys; 2: one 64-byte key (both the strict tier); 3: the epoch tier,
  // one 32-byte root key and `epoch_seconds` (1 s to 1 day).
  int derivation = 1;
  std::int64_t epoch_seconds = 0;
};

// Creates a generation with a fresh random name, the given schedule and key options.
Generation create_generation(hsm::Session& session, const Schedule& schedule, const KeyOptions& options = {});

// Destroys the generation's record and keys. Missing objects are not an error.
void destroy_generation(hsm::Session& session, const KeyName& name);

// Writes the revocation record for `name` (kept until `keep_until`), with the
// generation's schedule `was` if given, so that once its keys are gone `keys list` still
// shows when it was created and encrypted (its encrypt window ends at the revocation).
// Versions before this read the two fields they know and ignore the others.
void write_revocation(hsm::Session& session, const KeyName& name, std::int64_t revoked, std::int64_t keep_until,
                      const std::optional<Schedule>& was = std::nullopt);
// Destroys the revocation record for `name`, if any.
void drop_revocation(hsm::Session& session, const KeyName& name);

struct GenerationCustody {
  hsm::KeyCustody enc;
  hsm::KeyCustody mac;
};
GenerationCustody read_custody(hsm::Session& session, const Generation& generation);

}  // namespace keysvc::token_store
