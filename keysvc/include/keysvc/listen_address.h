// The address a metrics endpoint listens on: a numeric IPv4 address and a port,
// "127.0.0.1:9464" (port 0: any free port). No names (no DNS at start-up, no surprise
// about which interface a name resolves to) and no IPv6: the HTTP server behind the
// Prometheus exporter (civetweb, as Debian builds it) binds IPv4 only.
#pragma once

#include <string>
#include <string_view>

namespace keysvc {

// Returns what is wrong with `text` as a listen address, or "" if it is valid.
std::string check_listen_address(std::string_view text);

}  // namespace keysvc
