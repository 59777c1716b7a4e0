// How keysvc lays out ticket key generations in the token.
//
// One generation = three token objects named by the 16-byte key name:
//   CKO_SECRET_KEY  CKA_ID = name, label "keysvc-ticket-enc"  32-byte HMAC key (hsm/secret_key.h)
//   CKO_SECRET_KEY  CKA_ID = name, label "keysvc-ticket-mac"  32-byte HMAC key
//   CKO_DATA        label "keysvc-generation NAME_HEX", CKA_APPLICATION "keysvc", private,
//                   CKA_VALUE = "keysvc-generation v1\ncreated=UNIX_SECONDS\n"
//                   (PKCS#11 data objects have no CKA_ID, so the name is in the label)
// The data object is written last: a generation exists once its record exists, so a
// crash half-way through creating one leaves keys that no server ever uses.
// See docs/TOKEN-LAYOUT.md.
#pragma once

#include <cstdint>

#include "keysvc/hsm/secret_key.h"
#include "keysvc/hsm/session.h"
#include "keysvc/key_ring.h"

namespace keysvc::token_store {

inline constexpr char kApplication[] = "keysvc";
inline constexpr char kEncKeyLabel[] = "keysvc-ticket-enc";
inline constexpr char kMacKeyLabel[] = "keysvc-ticket-mac";
inline constexpr char kRecordLabelPrefix[] = "keysvc-generation ";

// Reads every complete generation in the token.
KeyRing load(hsm::Session& session);

// Creates a generation with a fresh random name; `created` is Unix seconds.
Generation create_generation(hsm::Session& session, std::int64_t created);

// Destroys the generation's record and keys. Missing objects are not an error.
void destroy_generation(hsm::Session& session, const KeyName& name);

struct GenerationCustody {
  hsm::KeyCustody enc;
  hsm::KeyCustody mac;
};
GenerationCustody read_custody(hsm::Session& session, const Generation& generation);

}  // namespace keysvc::token_store
