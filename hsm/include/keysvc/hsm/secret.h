// Memory that holds secrets (PINs, per-ticket key bytes) and is wiped when dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "keysvc/hsm/secure_memory.h"

namespace keysvc::hsm {

// Overwrites `bytes` with zeros in a way the compiler cannot elide (OPENSSL_cleanse).
void wipe(std::span<std::byte> bytes) noexcept;
inline void wipe(void* p, std::size_t n) noexcept {
  wipe(std::span<std::byte>(static_cast<std::byte*>(p), n));
}

// Wipes a std::string's whole buffer (capacity, not just size) and empties it. Use on
// every plain string that held a secret, including one it was moved from: a short
// string's characters stay in its own buffer after a move.
void wipe(std::string& s) noexcept;

// Wipes `s` when the scope ends, on every path.
class WipeOnExit {
 public:
  explicit WipeOnExit(std::string& s) noexcept : s_(s) {}
  ~WipeOnExit() { wipe(s_); }
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;

 private:
  std::string& s_;
};

// The longest secret a SecretString holds (PKCS#11 tokens take PINs far shorter).
inline constexpr std::size_t kMaxSecretBytes = kMaxSecureBlock;

// A string holding a secret (a PIN), in secure memory (secure_memory.h: never swapped,
// never in a core dump; OnFork::kKeep, since a forked worker logs in again with it).
// Move-only; the characters are wiped when the object is destroyed, moved from or
// cleared. Never formatted or logged. Throws std::length_error beyond kMaxSecretBytes.
class SecretString {
 public:
  SecretString() = default;
  // Copies `value` into secure memory, then wipes `value` (the caller's copy, if it
  // passed one, is the caller's to wipe).
  explicit SecretString(std::string value);
  // Copies `value` straight into secure memory (no plain intermediate).
  static SecretString copy_of(std::string_view value);
  // An empty secret with room for `capacity` bytes, to be filled in place through
  // buffer() and then resize()d: how secrets are read without a plain copy.
  static SecretString with_capacity(std::size_t capacity);

  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  SecretString(SecretString&& other) noexcept
      : block_(std::move(other.block_)), size_(std::exchange(other.size_, 0)) {}
  SecretString& operator=(SecretString&& other) noexcept {
    if (this != &other) {
      block_ = std::move(other.block_);  // wipes and frees the old value
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~SecretString() = default;  // the block wipes itself

  // Wipes and empties the secret (its room stays, for filling again).
  void clear() noexcept {
    wipe(block_.data(), block_.size());
    size_ = 0;
  }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  // Read access for the one call that needs the bytes (C_Login, C_InitToken).
  std::string_view reveal() const noexcept {
    return {reinterpret_cast<const char*>(block_.data()), size_};
  }
  // The whole room (capacity bytes) for filling in place; see with_capacity().
  std::span<char> buffer() noexcept { return {reinterpret_cast<char*>(block_.data()), block_.size()}; }
  std::size_t capacity() const noexcept { return block_.size(); }
  // Sets the length to n <= capacity(); the bytes after it are wiped.
  void resize(std::size_t n);

 private:
  SecureBlock block_;
  std::size_t size_ = 0;
};

}  // namespace keysvc::hsm
