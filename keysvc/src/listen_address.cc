#include "keysvc/listen_address.h"

#include <arpa/inet.h>

#include <charconv>

namespace keysvc {

std::string check_listen_address(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size())
    return "expected a numeric IPv4 HOST:PORT such as 127.0.0.1:9464, got '" + std::string(text) + "'";
  const std::string host(text.substr(0, colon));
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const char* end = port_text.data() + port_text.size();
  auto [ptr, ec] = std::from_chars(port_text.data(), end, port);
  if (ec != std::errc() || ptr != end || port > 65535) return "bad port '" + std::string(port_text) + "'";
  in_addr addr{};
  // inet_pton takes only the dotted quad (no "127.1", no names, no IPv6).
  if (::inet_pton(AF_INET, host.c_str(), &addr) != 1)
    return "'" + host + "' is not a numeric IPv4 address (names and IPv6 are not supported)";
  return {};
}

}  // namespace keysvc
