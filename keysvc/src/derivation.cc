#include "keysvc/derivation.h"

#include <algorithm>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/hsm/secret_key.h"

namespace keysvc {

void TicketKeys::wipe() noexcept {
  hsm::wipe(aes_key.data(), aes_key.size());
  hsm::wipe(hmac_key.data(), hmac_key.size());
}

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
    std::array<std::uint8_t, hsm::kHmacSha512Bytes> both{};
    try {
      hsm::hmac_sha512(session, generation.enc_signing_key(), derivation_message_v2(generation.name, iv), both);
    } catch (...) {
      hsm::wipe(both.data(), both.size());
      throw;
    }
    std::copy(both.begin(), both.begin() + kTicketKeyBytes, out.aes_key.begin());
    std::copy(both.begin() + kTicketKeyBytes, both.end(), out.hmac_key.begin());
    hsm::wipe(both.data(), both.size());
    return;
  }
  hsm::hmac_sha256(session, generation.enc_signing_key(), derivation_message(kAesKeyLabel, generation.name, iv),
                   out.aes_key);
  hsm::hmac_sha256(session, generation.mac_signing_key(), derivation_message(kHmacKeyLabel, generation.name, iv),
                   out.hmac_key);
}

}  // namespace keysvc
