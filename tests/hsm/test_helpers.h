// Small helpers shared by the hsm/ and keysvc/ unit tests (header-only).
#pragma once

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keysvc/hsm/module.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/hsm/session.h"
#include "keysvc/hsm/token.h"
#include "keysvc/hsm/token_uri.h"
#include "test_token.h"

namespace keysvc::test {

using ByteVec = std::vector<std::uint8_t>;

// The test token of this process (creating it first, so SOFTHSM2_CONF is set before the
// module is loaded).
inline hsm::Token test_hsm_token() {
  TestToken& t = TestToken::get();
  return hsm::Token::find(hsm::Module::load(kSoftHsmModule), hsm::TokenUri::parse(t.token_uri()));
}

// A private copy of the SoftHSM library, in the test token's folder: dlopen()ed from
// there it is a SoftHSM instance of its own in this process, one nothing here has
// initialised (TestToken uses the real path), so keysvc is its only user and may
// restart it (hsm::Module::restart). Same token files (SOFTHSM2_CONF).
inline std::string private_softhsm_copy() {
  const std::string copy = TestToken::get().dir() + "/libsofthsm2-" + random_text(6) + ".so";
  std::filesystem::copy_file(kSoftHsmModule, copy);
  return copy;
}

// A read-write session on the test token, logged in as the user.
inline std::unique_ptr<hsm::Session> user_session() {
  auto s = std::make_unique<hsm::Session>(test_hsm_token(), true);
  s->login(CKU_USER, hsm::SecretString(TestToken::get().pin()));
  return s;
}

// HMAC-SHA256 of `data` under the token key `key`, computed in the token (hsm::hmac_sha256).
using TokenMac = std::array<std::uint8_t, hsm::kHmacSha256Bytes>;
inline TokenMac token_hmac(hsm::Session& s, CK_OBJECT_HANDLE key, std::span<const std::uint8_t> data) {
  TokenMac mac{};
  hsm::hmac_sha256(s, key, data, mac);
  return mac;
}

inline ByteVec random_bytes(std::size_t n) {
  ByteVec b(n);
  if (n > 0 && RAND_bytes(b.data(), static_cast<int>(n)) != 1) throw std::runtime_error("RAND_bytes");
  return b;
}

inline std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// HMAC-SHA256 computed by OpenSSL, outside the token: the reference.
inline ByteVec openssl_hmac_sha256(std::span<const std::uint8_t> key, std::span<const std::uint8_t> data) {
  ByteVec mac(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  static const std::uint8_t empty = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.empty() ? &empty : data.data(),
           data.size(), mac.data(), &len) == nullptr)
    throw std::runtime_error("HMAC failed");
  mac.resize(len);
  return mac;
}

inline std::string hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (auto b : bytes) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

inline ByteVec from_hex(std::string_view text) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    throw std::invalid_argument("not hex: " + std::string(1, c));
  };
  if (text.size() % 2 != 0) throw std::invalid_argument("odd hex length");
  ByteVec out;
  for (std::size_t i = 0; i < text.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(nibble(text[i]) << 4 | nibble(text[i + 1])));
  return out;
}

}  // namespace keysvc::test
