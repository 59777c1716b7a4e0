#include "keysvc/listen_address.h"

#include <gtest/gtest.h>

namespace keysvc {
namespace {

TEST(ListenAddress, AcceptsNumericIpv4AndPort) {
  for (const char* ok : {"127.0.0.1:9464", "0.0.0.0:0", "127.0.0.1:65535", "10.1.2.3:80"})
    EXPECT_EQ(check_listen_address(ok), "") << ok;
}

TEST(ListenAddress, RejectsEverythingElseWithAReason) {
  const std::pair<const char*, const char*> bad[] = {
      {"", "expected a numeric IPv4 HOST:PORT"},
      {"9464", "expected a numeric IPv4 HOST:PORT"},
      {":9464", "expected a numeric IPv4 HOST:PORT"},
      {"127.0.0.1:", "expected a numeric IPv4 HOST:PORT"},
      {"127.0.0.1:65536", "bad port '65536'"},
      {"127.0.0.1:-1", "bad port '-1'"},
      {"127.0.0.1:80s", "bad port '80s'"},
      {"127.0.0.1:80,127.0.0.1:81", "is not a numeric IPv4 address"},  // no civetweb port lists
      {"localhost:9464", "'localhost' is not a numeric IPv4 address"},
      {"127.1:9464", "'127.1' is not a numeric IPv4 address"},
      {"[::1]:9464", "'[::1]' is not a numeric IPv4 address"},
      {" 127.0.0.1:9464", "is not a numeric IPv4 address"},
  };
  for (const auto& [text, why] : bad) {
    std::string problem = check_listen_address(text);
    EXPECT_NE(problem.find(why), std::string::npos) << "'" << text << "' -> " << problem;
  }
}

TEST(ListenAddress, TlsListenersAlsoTakeBracketedIpv6) {
  const std::pair<const char*, ListenAddress> ok[] = {
      {"127.0.0.1:8443", {"127.0.0.1", "8443"}},
      {"[::1]:0", {"::1", "0"}},
      {"[2001:db8::7]:443", {"2001:db8::7", "443"}},
  };
  for (const auto& [text, want] : ok) {
    ListenAddress got;
    EXPECT_EQ(parse_listen_address(text, IpFamilies::kIpv4AndIpv6, got), "") << text;
    EXPECT_EQ(got.host, want.host) << text;
    EXPECT_EQ(got.port, want.port) << text;
  }
  const std::pair<const char*, const char*> bad[] = {
      {"::1:443", "an IPv6 host goes in brackets"},
      {"[::1:443", "expected HOST:PORT or [IPV6]:PORT"},
      {"[]:443", "expected HOST:PORT or [IPV6]:PORT"},
      {"[::1]:", "expected HOST:PORT or [IPV6]:PORT"},
      {"[::1]:70000", "bad port '70000'"},
      {"localhost:443", "'localhost' is not a numeric IP address"},
      {"[fe80::1%eth0]:443", "is not a numeric IP address"},
  };
  for (const auto& [text, why] : bad) {
    ListenAddress out{"unchanged", "unchanged"};
    std::string problem = parse_listen_address(text, IpFamilies::kIpv4AndIpv6, out);
    EXPECT_NE(problem.find(why), std::string::npos) << "'" << text << "' -> " << problem;
    EXPECT_EQ(problem.find('\n'), std::string::npos) << problem;
    EXPECT_EQ(out.host, "unchanged") << "a refused address must not be half-parsed: " << text;
  }
}

}  // namespace
}  // namespace keysvc
