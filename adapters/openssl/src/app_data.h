// The app-data record keysvc puts in every ticket (SSL_SESSION_set1_ticket_appdata).
//
// Version 1, 26 bytes, big-endian:
//   0      version (1)
//   1      flags (0; reserved)
//   2..9   auth_time: Unix seconds of the original full handshake; kept across
//          renewals so a chain of renewed tickets cannot outlive max_session_age
//   10..25 key name of the generation that was encrypting when the chain was issued
//          or last renewed
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>

#include "keysvc/key_name.h"

namespace keysvc::openssl {

struct TicketAppData {
  static constexpr std::uint8_t kVersion = 1;
  static constexpr std::size_t kEncodedBytes = 26;

  std::int64_t auth_time = 0;
  KeyName issued_under{};

  // On the stack: one is made for every ticket issued.
  std::array<std::uint8_t, kEncodedBytes> encode() const;
  // nullopt for anything that is not a well-formed version-1 record.
  static std::optional<TicketAppData> decode(std::span<const std::uint8_t> bytes);
};

}  // namespace keysvc::openssl
