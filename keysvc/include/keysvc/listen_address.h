// Listen addresses given by operators: a numeric host and a port, "127.0.0.1:9464" or
// "[::1]:8443" (port 0: any free port). No names: no DNS at start-up, no surprise about
// which interface a name resolves to.
#pragma once

#include <string>
#include <string_view>

namespace keysvc {

// Which hosts a listener accepts.
enum class IpFamilies {
  kIpv4,         // the metrics endpoint: the HTTP server behind the Prometheus exporter
                 // (civetweb, as Debian builds it) binds IPv4 only
  kIpv4AndIpv6,  // a TLS listener; an IPv6 host goes in brackets
};

// A listen address split into its parts.
struct ListenAddress {
  std::string host;  // numeric, without brackets
  std::string port;  // decimal, 0-65535
};

// Parses `text` as HOST:PORT for `families` into `out`. Returns what is wrong with it
// (one line that quotes the text), or "" if it is valid.
std::string parse_listen_address(std::string_view text, IpFamilies families, ListenAddress& out);

// Returns what is wrong with `text` as an IPv4 listen address, or "" if it is valid.
std::string check_listen_address(std::string_view text);

}  // namespace keysvc
