#include "keysvc/derivation.h"

#include <algorithm>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/hsm/secret_key.h"

namespace keysvc {

DerivationMessage derivation_message(std::string_view label, const KeyName& name, const Iv& iv) {
  DerivationMessage m{};
  auto out = std::copy(label.begin(), label.end(), m.begin());
  *out++ = 0x00;
  out = std::copy(name.begin(), name.end(), out);
  std::copy(iv.begin(), iv.end(), out);
  return m;
}

DerivationMessageV2 derivation_message_v2(const KeyName& name, const Iv& iv) {
  DerivationMessageV2 m{};
  auto out = std::copy(kTicketKeysV2Label.begin(), kTicketKeysV2Label.end(), m.begin());
  *out++ = 0x00;
  out = std::copy(name.begin(), name.end(), out);
  std::copy(iv.begin(), iv.end(), out);
  return m;
}

void derive_ticket_keys(hsm::Session& session, const Generation& generation, const Iv& iv, TicketKeys& out) {
  // Handles read before a module restart may name other objects now: never sign with
  // them. A stale-handle error makes the service read the ring again.
  if (generation.handles_predate(session.generation()))
    throw hsm::Pkcs11Error("C_SignInit (key handles from before a module restart)", CKR_KEY_HANDLE_INVALID);
  if (generation.derivation == 2) {
    hsm::SecureBuffer<hsm::kHmacSha512Bytes> both;  // wiped when it goes, on every path
    hsm::hmac_sha512(session, generation.enc_signing_key(), derivation_message_v2(generation.name, iv), both.span());
    std::copy(both.data(), both.data() + kTicketKeyBytes, out.aes_key.begin());
    std::copy(both.data() + kTicketKeyBytes, both.data() + 2 * kTicketKeyBytes, out.hmac_key.begin());
    return;
  }
  hsm::hmac_sha256(session, generation.enc_signing_key(), derivation_message(kAesKeyLabel, generation.name, iv),
                   out.aes_key);
  hsm::hmac_sha256(session, generation.mac_signing_key(), derivation_message(kHmacKeyLabel, generation.name, iv),
                   out.hmac_key);
}

}  // namespace keysvc
