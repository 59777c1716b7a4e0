#include "keysvc/derivation.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <mutex>
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

void derive_epoch_key(hsm::Session& session, const Generation& generation, std::int64_t epoch, EpochKey& out) {
  out.assign([&](std::span<std::uint8_t, kEpochKeyBytes> key) {
    if (generation.handles_predate(session.generation()))
      throw hsm::Pkcs11Error("C_SignInit (key handles from before a module restart)", CKR_KEY_HANDLE_INVALID);
    hsm::hmac_sha256(session, generation.enc_signing_key(), epoch_key_message(generation.name, epoch), key);
  });
}

void derive_ticket_keys_from_epoch(const EpochKey& epoch_key, const KeyName& name, const Iv& iv, TicketKeys& out) {
  // HKDF-Expand (RFC 5869) for 64 bytes: T(1) = HMAC(PRK, info || 1),
  // T(2) = HMAC(PRK, T(1) || info || 2); out = T(1) || T(2). The same bytes as OpenSSL's
  // "HKDF" in expand-only mode (derivation_test checks both against the documented
  // vector and random inputs), at a third of its cost per ticket: each HMAC starts from
  // the epoch key's stored pad states (epoch_key.h), so a ticket costs six SHA-256
  // compressions instead of ten, and no EVP context (keysvc-microbench BM_KdfDerive,
  // docs/PERFORMANCE.md).
  static_assert(SHA256_DIGEST_LENGTH == kTicketKeyBytes, "T(1) is the AES key, T(2) the HMAC key");
  const TicketInfoV3 info = ticket_info_v3(name, iv);
  const auto both = out.both();
  std::uint8_t* t1 = both.data();
  std::uint8_t* t2 = both.data() + SHA256_DIGEST_LENGTH;
  constexpr std::uint8_t kOne = 1, kTwo = 2;
  if (!epoch_key.hmac({info, {&kOne, 1}}, t1) ||
      !epoch_key.hmac({{t1, SHA256_DIGEST_LENGTH}, info, {&kTwo, 1}}, t2)) {
    out.wipe();
    throw std::runtime_error("HKDF-Expand-SHA256: no secure memory left for its working state");
  }
}

namespace {
// Incremented in every fork child (pthread_atfork): a nonce reserve filled before the
// fork is not used after it.
std::atomic<unsigned> g_forks{0};

// The 12 random bytes of each epoch-tier IV come from a per-thread reserve that one
// RAND_bytes call fills for 20 tickets: OpenSSL's DRBG re-keys its AES-CTR state after
// every request, so 12 bytes asked alone cost as much as the ticket's HKDF (1.4 us in
// keysvc-bench, docs/PERFORMANCE.md). Nonces are public (each is sent in its ticket)
// but must never repeat under one epoch key: each is handed out once and wiped, and a
// fork child (which shares the parent's epoch keys until it derives its own) draws a
// reserve of its own.
class NonceReserve {
 public:
  static constexpr std::size_t kNonceBytes = kIvBytes - 4;

  bool take(std::uint8_t* out) noexcept {
    const unsigned forks = g_forks.load(std::memory_order_relaxed);
    if (left_ == 0 || forks != filled_at_fork_) {
      if (RAND_bytes(nonces_.data(), static_cast<int>(nonces_.size())) != 1) return false;
      left_ = kNonces;
      filled_at_fork_ = forks;
    }
    std::uint8_t* n = nonces_.data() + --left_ * kNonceBytes;
    std::copy(n, n + kNonceBytes, out);
    OPENSSL_cleanse(n, kNonceBytes);
    return true;
  }

  static NonceReserve& of_this_thread() {
    static std::once_flag once;
    std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1); }); });
    thread_local NonceReserve reserve;
    return reserve;
  }

 private:
  static constexpr std::size_t kNonces = 20;
  std::array<std::uint8_t, kNonces * kNonceBytes> nonces_{};
  std::size_t left_ = 0;
  unsigned filled_at_fork_ = 0;
};
}  // namespace

bool make_epoch_iv(std::int64_t epoch, Iv& out) noexcept {
  const auto e = static_cast<std::uint32_t>(epoch);
  for (int k = 0; k < 4; ++k) out[k] = static_cast<std::uint8_t>(e >> (8 * (3 - k)));
  static_assert(NonceReserve::kNonceBytes == kIvBytes - 4);
  return NonceReserve::of_this_thread().take(out.data() + 4);
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
