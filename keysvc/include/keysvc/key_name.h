// A ticket key generation's name: 16 random bytes that lead every ticket it protects
// (OpenSSL's key_name field), the CKA_ID of its keys in the token. Shown to people as
// 32 lowercase hex digits.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace keysvc {

inline constexpr std::size_t kKeyNameBytes = 16;
inline constexpr std::size_t kIvBytes = 16;

using KeyName = std::array<std::uint8_t, kKeyNameBytes>;
using Iv = std::array<std::uint8_t, kIvBytes>;

// Lowercase hex: keysvc's one hex encoder (key names, hashes, object ids).
std::string to_hex(std::span<const std::uint8_t> bytes);
std::string to_hex(const KeyName& name);
// Accepts exactly 32 hex digits (either case).
std::optional<KeyName> key_name_from_hex(std::string_view hex);

}  // namespace keysvc
