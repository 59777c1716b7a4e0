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

}  // namespace
}  // namespace keysvc
