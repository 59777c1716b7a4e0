#include "keysvc/derivation.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/hsm/secret_key.h"

namespace keysvc {

namespace {
// label || 0x00 || key_name || tail: every message keysvc MACs or expands starts so
// (derivation.h). `M` is exactly that long.
template <typename M>
M labelled_message(std::string_view label, const KeyName& name, std::span<const std::uint8_t> tail) {
  M m{};
  auto out = std::copy(label.begin(), label.end(), m.begin());
  *out++ = 0x00;
  out = std::copy(name.begin(), name.end(), out);
  std::copy(tail.begin(), tail.end(), out);
  return m;
}
}  // namespace

DerivationMessage derivation_message(std::string_view label, const KeyName& name, const Iv& iv) {
  return labelled_message<DerivationMessage>(label, name, iv);
}

DerivationMessageV2 derivation_message_v2(const KeyName& name, const Iv& iv) {
  return labelled_message<DerivationMessageV2>(kTicketKeysV2Label, name, iv);
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

// ---------------------------------------------------------------- the epoch tier

EpochKeyMessage epoch_key_message(const KeyName& name, std::int64_t epoch) {
  std::array<std::uint8_t, 8> be{};  // the epoch, 8 bytes big endian
  for (int k = 0; k < 8; ++k) be[k] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(epoch) >> (8 * (7 - k)));
  return labelled_message<EpochKeyMessage>(kEpochKeyLabel, name, be);
}

TicketInfoV3 ticket_info_v3(const KeyName& name, const Iv& iv) {
  return labelled_message<TicketInfoV3>(kTicketKeysV3Label, name, iv);
}

void derive_epoch_key(hsm::Session& session, const Generation& generation, std::int64_t epoch,
                      std::span<std::uint8_t, kEpochKeyBytes> out) {
  if (generation.handles_predate(session.generation()))
    throw hsm::Pkcs11Error("C_SignInit (key handles from before a module restart)", CKR_KEY_HANDLE_INVALID);
  hsm::hmac_sha256(session, generation.enc_signing_key(), epoch_key_message(generation.name, epoch), out);
}

namespace {
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* c) const noexcept { EVP_KDF_CTX_free(c); }
};
// OpenSSL's HKDF, fetched once from the default library context.
EVP_KDF* hkdf() {
  static EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  return kdf;
}
}  // namespace

void derive_ticket_keys_from_epoch(std::span<const std::uint8_t, kEpochKeyBytes> epoch_key, const KeyName& name,
                                   const Iv& iv, TicketKeys& out) {
  std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(hkdf() ? EVP_KDF_CTX_new(hkdf()) : nullptr);
  TicketInfoV3 info = ticket_info_v3(name, iv);
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(epoch_key.data()),
                                        epoch_key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  auto both = out.both();
  if (!ctx || EVP_KDF_derive(ctx.get(), both.data(), both.size(), params) != 1) {
    out.wipe();
    throw std::runtime_error("HKDF-Expand-SHA256 failed in OpenSSL");
  }
}

bool make_epoch_iv(std::int64_t epoch, Iv& out) noexcept {
  const auto e = static_cast<std::uint32_t>(epoch);
  for (int k = 0; k < 4; ++k) out[k] = static_cast<std::uint8_t>(e >> (8 * (3 - k)));
  return RAND_bytes(out.data() + 4, static_cast<int>(out.size() - 4)) == 1;
}

std::int64_t epoch_of_iv(const Iv& iv, std::int64_t near) noexcept {
  std::uint32_t field = 0;
  for (int k = 0; k < 4; ++k) field = (field << 8) | iv[k];
  constexpr std::int64_t kWrap = std::int64_t{1} << 32;
  std::int64_t e = (near & ~(kWrap - 1)) | field;
  if (e - near > kWrap / 2) e -= kWrap;
  else if (near - e > kWrap / 2) e += kWrap;
  return e;
}

}  // namespace keysvc
