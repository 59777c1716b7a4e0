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

// A string holding a secret (a PIN). Move-only; the characters are wiped when the
// object is destroyed, moved from or cleared. Never formatted or logged.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
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
