// mod_keysvc in the real Apache httpd (Debian's 2.4, event MPM, mod_ssl) on a real
// SoftHSM token made for the test, children running as www-data when the test runs as
// root (tests/support/worker_user.h):
//   - the directives in the main server and virtual hosts, and the configurations
//     `apache2 -t` (apachectl configtest) refuses, each with one line;
//   - the parent reads keysvc's TOML and PIN; the children, as www-data, cannot read the
//     PIN file and open the token themselves; the parent never loads the PKCS#11 module;
//   - a graceful restart (SIGUSR1) keeps tickets working.
// Ticket behaviour (resumption, rotation, HSM failure): apache_tickets_test.cc.
//
// Every test name contains "Apache" so `ctest -R Apache` selects them. Waits are
// bounded; nothing asserts a duration.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "apache_keysvc.h"
#include "test_token.h"
#include "ticket_scenarios.h"

namespace {

using namespace std::chrono_literals;
using namespace keysvc::test;

// ---- 1. directives and refusals (apache2 -t) ----

std::string conf_with(const std::string& main, const std::string& vhost, const std::string& d) {
  ApacheOptions o = keysvc_apache(1, write_keysvc_toml("apache-keysvc.toml", {}));
  o.main = main;
  o.vhost = vhost;
  return ApacheInstance::render(d, o, free_port());
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(ApacheModule, ApacheAcceptsTheDirectivesInTheMainServerAndVirtualHosts) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  const std::string d = token_subdir("conf");
  struct Case {
    std::string name, main, vhost;
  };
  for (const Case& c : std::vector<Case>{
           {"config in main server, tickets in vhost", "KeysvcConfig " + toml + "\n", "KeysvcTickets on\n"},
           {"both in vhost", "", "KeysvcConfig " + toml + "\nKeysvcTickets on\n"},
           {"both in main server", "KeysvcConfig " + toml + "\nKeysvcTickets on\n", ""},
           {"relative to ServerRoot", "KeysvcConfig ../apache-keysvc.toml\n", "KeysvcTickets on\n"},
           {"off, no config", "", "KeysvcTickets off\n"},
           {"tickets off where SSLSessionTickets is off", "KeysvcConfig " + toml + "\n",
            "KeysvcTickets off\nSSLSessionTickets off\n"},
       }) {
    RunResult r = ApacheInstance::test_config(d, "ok.conf", conf_with(c.main, c.vhost, d));
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << c.name << "\n" << describe(r);
    EXPECT_NE(r.err.find("Syntax OK"), std::string::npos) << c.name << "\n" << describe(r);
  }
}

TEST(ApacheModule, ApacheConfigtestRefusesConflictingOrBadConfigurations) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  const std::string d = token_subdir("conf");
  const std::string bad_toml = TestToken::get().dir() + "/bad.toml";
  std::ofstream(bad_toml) << read_file(toml) << "\n[tickets2]\nlifetme = 3\n";
  const std::string no_pin_toml = TestToken::get().dir() + "/no-pin.toml";
  std::ofstream(no_pin_toml) << std::regex_replace(read_file(toml), std::regex("file:pin"), "file:/nonexistent/pin");
  const std::string ticket_key = d + "/ticket.key";
  std::ofstream(ticket_key, std::ios::binary) << std::string(48, 'k');  // mod_ssl's size
  const std::string config = "KeysvcConfig " + toml + "\n";
  struct Case {
    std::string name, main, vhost, message;
  };
  for (const Case& c : std::vector<Case>{
           {"no KeysvcConfig", "", "KeysvcTickets on\n", "\"KeysvcTickets on\" needs \"KeysvcConfig\""},
           {"SSLSessionTicketKeyFile in the vhost", config,
            "KeysvcTickets on\nSSLSessionTicketKeyFile " + ticket_key + "\n",
            "\"KeysvcTickets on\" and \"SSLSessionTicketKeyFile\""},
           {"SSLSessionTicketKeyFile in the main server", config + "SSLSessionTicketKeyFile " + ticket_key + "\n",
            "KeysvcTickets on\n", "\"KeysvcTickets on\" and \"SSLSessionTicketKeyFile\""},
           {"SSLSessionTickets off in the vhost", config, "KeysvcTickets on\nSSLSessionTickets off\n",
            "\"KeysvcTickets on\" and \"SSLSessionTickets off\""},
           {"SSLSessionTickets off in the main server", config + "SSLSessionTickets off\n", "KeysvcTickets on\n",
            "\"KeysvcTickets on\" and \"SSLSessionTickets off\""},
           {"bad keysvc toml", "KeysvcConfig " + bad_toml + "\n", "KeysvcTickets on\n", "bad.toml:"},
           {"missing keysvc toml", "KeysvcConfig /nonexistent/keysvc.toml\n", "KeysvcTickets on\n",
            "/nonexistent/keysvc.toml"},
           {"missing PIN file", "KeysvcConfig " + no_pin_toml + "\n", "KeysvcTickets on\n",
            "cannot read PIN file /nonexistent/pin"},
           {"bad flag", config, "KeysvcTickets maybe\n", "KeysvcTickets must be On or Off"},
           {"twice", config, "KeysvcConfig " + toml + "\nKeysvcConfig " + toml + "\nKeysvcTickets on\n",
            "KeysvcConfig: duplicate"},
       }) {
    RunResult r = ApacheInstance::test_config(d, "bad.conf", conf_with(c.main, c.vhost, d));
    EXPECT_NE(r.exit_code, std::optional<int>(0)) << c.name << "\n" << describe(r);
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.name << "\n" << describe(r);
    EXPECT_LE(count(r.err, "mod_keysvc:"), 1u) << c.name << ": more than one line\n" << describe(r);
    EXPECT_EQ(r.err.find("Syntax OK"), std::string::npos) << c.name << "\n" << describe(r);
  }
}

// ---- 2. the parent reads the PIN, the children open the token ----

TEST(ApacheModule, ApacheOpensTheTokenInEachChildNotInTheParent) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  ApacheInstance httpd(token_subdir("httpd"), keysvc_apache(3, toml));
  opens_the_token_in_each_worker_not_in_the_master(httpd, 3);
}

// ---- 3. graceful restart ----

// SIGUSR1 (apachectl graceful): the parent reads the configuration and PIN again and
// replaces its children; a ticket issued before resumes on the new children.
TEST(ApacheModule, ApacheGracefulRestartKeepsTicketsWorking) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  ApacheInstance httpd(token_subdir("httpd"), keysvc_apache(2, toml));
  tickets_survive_a_reload(httpd, SIGUSR1, "graceful restart");
}

}  // namespace
