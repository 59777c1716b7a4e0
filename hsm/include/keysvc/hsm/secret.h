// Memory that holds secrets (PINs, per-ticket key bytes) and is wiped when dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

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

// A string holding a secret (a PIN). Move-only; the characters are wiped when the
// object is destroyed, moved from or cleared. Never formatted or logged.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  // Copies `value` straight into the secret's own buffer (no plain intermediate).
  static SecretString copy_of(std::string_view value) {
    SecretString s;
    s.value_.assign(value);
    return s;
  }
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  SecretString(SecretString&& other) noexcept { swap(other); }
  SecretString& operator=(SecretString&& other) noexcept {
    clear();
    swap(other);
    return *this;
  }
  ~SecretString() { clear(); }

  // Wipes and empties the secret.
  void clear() noexcept;
  bool empty() const noexcept { return value_.empty(); }
  std::size_t size() const noexcept { return value_.size(); }
  // Read access for the one call that needs the bytes (C_Login, C_InitToken).
  std::string_view reveal() const noexcept { return value_; }

 private:
  void swap(SecretString& other) noexcept { value_.swap(other.value_); }
  std::string value_;
};

}  // namespace keysvc::hsm
