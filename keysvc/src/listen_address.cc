#include "keysvc/listen_address.h"

#include <arpa/inet.h>

#include <array>
#include <charconv>

namespace keysvc {

std::string parse_listen_address(std::string_view text, IpFamilies families, ListenAddress& out) {
  const bool v6 = families == IpFamilies::kIpv4AndIpv6;
  const std::string expected = v6 ? "expected HOST:PORT or [IPV6]:PORT with a numeric host, got '"
                                  : "expected a numeric IPv4 HOST:PORT such as 127.0.0.1:9464, got '";
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size())
    return expected + std::string(text) + "'";
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (v6 && host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return expected + std::string(text) + "'";
    host = host.substr(1, host.size() - 2);
  } else if (v6 && host.find(':') != std::string_view::npos) {
    return expected + std::string(text) + "' (an IPv6 host goes in brackets)";
  }
  unsigned port = 0;
  const char* end = port_text.data() + port_text.size();
  auto [ptr, ec] = std::from_chars(port_text.data(), end, port);
  if (ec != std::errc() || ptr != end || port > 65535) return "bad port '" + std::string(port_text) + "'";
  // inet_pton takes only the full numeric forms (no "127.1", no names).
  const std::string host_text(host);
  std::array<unsigned char, sizeof(in6_addr)> addr{};
  const bool numeric = ::inet_pton(AF_INET, host_text.c_str(), addr.data()) == 1 ||
                       (v6 && ::inet_pton(AF_INET6, host_text.c_str(), addr.data()) == 1);
  if (!numeric) {
    return "'" + host_text + "' is not a numeric " +
           (v6 ? std::string("IP address") : "IPv4 address (names and IPv6 are not supported)");
  }
  out.host = host_text;
  out.port = std::string(port_text);
  return {};
}

std::string check_listen_address(std::string_view text) {
  ListenAddress parts;
  return parse_listen_address(text, IpFamilies::kIpv4, parts);
}

}  // namespace keysvc
