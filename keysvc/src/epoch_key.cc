// The epoch key's HMAC states (epoch_key.h). SHA256_Init/Update/Final are deprecated in
// OpenSSL 3 and the project builds with OPENSSL_NO_DEPRECATED (CMakeLists.txt); this
// file alone is let off, before any OpenSSL header: these functions are the only
// interface that keeps SHA-256's state in memory the caller chooses, which the custody
// rules need for the states (see the header).
#undef OPENSSL_NO_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED
#include "keysvc/epoch_key.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace keysvc {
namespace {

constexpr std::size_t kBlock = SHA256_CBLOCK;  // HMAC's pad length for SHA-256

// One SHA256_CTX at `offset` of a secure block. SHA256_CTX is plain data (words and
// counters) and the blocks are at least 32-byte aligned.
SHA256_CTX* state_at(std::uint8_t* block, std::size_t offset) noexcept {
  return std::launder(reinterpret_cast<SHA256_CTX*>(block + offset));
}

constexpr std::size_t kInnerAt = kEpochKeyBytes;
constexpr std::size_t kOuterAt = kInnerAt + sizeof(SHA256_CTX);
static_assert(kOuterAt + sizeof(SHA256_CTX) <= hsm::kMaxSecureBlock);
static_assert(kInnerAt % alignof(SHA256_CTX) == 0 && kOuterAt % alignof(SHA256_CTX) == 0);

// A running HMAC's state and its inner digest: the calling thread's, wiped after each use.
struct Working {
  SHA256_CTX state;
  std::uint8_t inner_digest[SHA256_DIGEST_LENGTH];
};
using WorkingBlock = hsm::SecureBuffer<sizeof(Working)>;

}  // namespace

EpochKey::EpochKey() {
  new (block_.data() + kInnerAt) SHA256_CTX{};
  new (block_.data() + kOuterAt) SHA256_CTX{};
}

void EpochKey::assign(std::span<const std::uint8_t, kEpochKeyBytes> bytes) {
  assign([&](std::span<std::uint8_t, kEpochKeyBytes> key) { std::copy(bytes.begin(), bytes.end(), key.begin()); });
}

// RFC 2104: the inner state has absorbed key ^ ipad, the outer key ^ opad (the key is
// shorter than a block, so it is padded with zeros). The padded key is built one byte at
// a time into the state's own input buffer, in secure memory.
void EpochKey::prepare() noexcept {
  const auto key = key_bytes();
  for (auto [offset, pad] : {std::pair{kInnerAt, std::uint8_t{0x36}}, std::pair{kOuterAt, std::uint8_t{0x5c}}}) {
    SHA256_CTX* state = state_at(block_.data(), offset);
    SHA256_Init(state);
    for (std::size_t k = 0; k < kBlock; ++k) {
      const std::uint8_t byte = static_cast<std::uint8_t>((k < key.size() ? key[k] : 0) ^ pad);
      SHA256_Update(state, &byte, 1);
    }
  }
}

bool EpochKey::hmac(std::initializer_list<std::span<const std::uint8_t>> parts, std::uint8_t* out) const noexcept {
  const hsm::ThreadScratch<WorkingBlock, struct WorkingTag> scratch;  // wiped on return
  if (!scratch) return false;
  auto* w = new (scratch->data()) Working;
  std::memcpy(&w->state, state_at(block_.data(), kInnerAt), sizeof(SHA256_CTX));
  for (const auto& part : parts) SHA256_Update(&w->state, part.data(), part.size());
  SHA256_Final(w->inner_digest, &w->state);
  std::memcpy(&w->state, state_at(block_.data(), kOuterAt), sizeof(SHA256_CTX));
  SHA256_Update(&w->state, w->inner_digest, sizeof w->inner_digest);
  SHA256_Final(out, &w->state);
  return true;
}

}  // namespace keysvc
