#include "app_data.h"

#include <algorithm>

namespace keysvc::openssl {

std::array<std::uint8_t, TicketAppData::kEncodedBytes> TicketAppData::encode() const {
  std::array<std::uint8_t, kEncodedBytes> out{};
  out[0] = kVersion;
  out[1] = 0;
  auto t = static_cast<std::uint64_t>(auth_time);
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<std::uint8_t>(t >> (56 - 8 * i));
  std::copy(issued_under.begin(), issued_under.end(), out.begin() + 10);
  return out;
}

std::optional<TicketAppData> TicketAppData::decode(std::span<const std::uint8_t> bytes) {
  if (bytes.size() != kEncodedBytes || bytes[0] != kVersion || bytes[1] != 0) return std::nullopt;
  TicketAppData d;
  std::uint64_t t = 0;
  for (int i = 0; i < 8; ++i) t = t << 8 | bytes[2 + i];
  d.auth_time = static_cast<std::int64_t>(t);
  if (d.auth_time < 0) return std::nullopt;
  std::copy(bytes.begin() + 10, bytes.end(), d.issued_under.begin());
  return d;
}

}  // namespace keysvc::openssl
