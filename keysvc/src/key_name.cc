#include "keysvc/key_name.h"

namespace keysvc {

std::string to_hex(const KeyName& name) { return to_hex(std::span<const std::uint8_t>(name)); }

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * bytes.size());
  for (auto b : bytes) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

std::optional<KeyName> key_name_from_hex(std::string_view hex) {
  if (hex.size() != 2 * kKeyNameBytes) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  KeyName name{};
  for (std::size_t i = 0; i < name.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    name[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return name;
}

}  // namespace keysvc
