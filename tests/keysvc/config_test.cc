#include "keysvc/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "test_helpers.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;

const std::string kMinimal = "[hsm]\nmodule = \"/m.so\"\ntoken = \"pkcs11:token=t\"\n";

// The ConfigError message for `toml`, or "(no error)".
std::string error_of(const std::string& toml) {
  try {
    Config::parse(toml, "test.toml", "/base");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// Asserts "test.toml:LINE: ..." on one line, containing `what`.
void expect_error(const std::string& toml, int line, const std::string& what) {
  std::string msg = error_of(toml);
  SCOPED_TRACE("config:\n" + toml);
  EXPECT_EQ(msg.rfind("test.toml:" + std::to_string(line) + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find(what), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::TestToken::get().dir() + "/cfg-" + test::random_text(8);
    std::filesystem::create_directories(dir_ + "/etc");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& text) {
    std::string path = dir_ + "/etc/keysvc.toml";
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(ConfigFileTest, ValidFileWithEveryKey) {
  std::string path = write(R"(# keysvc
[hsm]
module   = "/usr/lib/softhsm/libsofthsm2.so"
token    = "pkcs11:token=keysvc"
pin      = "file:pin"
sessions = 8

[tickets]
per_handshake   = 3
lifetime        = "90m"
max_session_age = "2d"
create_if_empty = false

[rotation]
encrypt_period   = "30m"
publish_lead     = "5m"
decrypt_window   = "3h"
clock_skew       = "10s"
refresh_interval = 20
self_rotate      = false

[log]
level = "debug"
)");
  Config c = Config::load_file(path);
  EXPECT_EQ(c.hsm.module, "/usr/lib/softhsm/libsofthsm2.so");
  EXPECT_EQ(c.hsm.token_uri, "pkcs11:token=keysvc");
  EXPECT_EQ(c.hsm.pin_source, "file:" + dir_ + "/etc/pin") << "relative PIN file resolved against the config's folder";
  EXPECT_EQ(c.hsm.sessions, 8u);
  EXPECT_EQ(c.tickets.per_handshake, 3);
  EXPECT_EQ(c.tickets.lifetime, 90min);
  EXPECT_EQ(c.tickets.max_session_age, 48h);
  EXPECT_FALSE(c.tickets.create_if_empty);
  EXPECT_EQ(c.rotation.encrypt_period, 30min);
  EXPECT_EQ(c.rotation.publish_lead, 5min);
  EXPECT_EQ(c.rotation.decrypt_window, 3h);
  EXPECT_EQ(c.rotation.clock_skew, 10s);
  EXPECT_EQ(c.rotation.refresh_interval, 20s);
  EXPECT_FALSE(c.rotation.self_rotate);
  EXPECT_EQ(c.log_level, "debug");
}

TEST_F(ConfigFileTest, RelativePathsAreRelativeToTheConfigFolder) {
  std::string path = write("[hsm]\nmodule = \"../lib/p11.so\"\ntoken = \"pkcs11:token=t\"\npin = \"file:secrets/../pin\"\n");
  Config c = Config::load_file(path);
  EXPECT_EQ(c.hsm.module, dir_ + "/lib/p11.so");
  EXPECT_EQ(c.hsm.pin_source, "file:" + dir_ + "/etc/pin");
}

TEST_F(ConfigFileTest, RelativeConfigPathResolvesToAnAbsoluteFolder) {
  std::string path = write(kMinimal + "pin = \"file:pin\"\n");
  auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_);
  Config c = Config::load_file("etc/keysvc.toml");
  std::filesystem::current_path(cwd);
  EXPECT_EQ(c.hsm.pin_source, "file:" + dir_ + "/etc/pin");
}

TEST_F(ConfigFileTest, MissingFileNamesIt) {
  try {
    Config::load_file(dir_ + "/nope.toml");
    FAIL() << "loaded a missing file";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(dir_ + "/nope.toml"), std::string::npos) << e.what();
  }
}

TEST(Config, TestTokenConfigLoads) {
  auto& t = test::TestToken::get();
  Config c = t.config();
  EXPECT_EQ(c.hsm.module, test::kSoftHsmModule);
  EXPECT_EQ(c.hsm.token_uri, t.token_uri());
  EXPECT_EQ(c.hsm.pin_source, "file:" + t.pin_path());
}

TEST(Config, Defaults) {
  Config c = Config::parse(kMinimal, "test.toml", "/base");
  EXPECT_EQ(c.hsm.pin_source, "");
  EXPECT_EQ(c.hsm.sessions, 4u);
  EXPECT_EQ(c.tickets.per_handshake, 2);
  EXPECT_EQ(c.tickets.lifetime, 2h);
  EXPECT_EQ(c.tickets.max_session_age, 24h);
  EXPECT_TRUE(c.tickets.create_if_empty);
  EXPECT_EQ(c.rotation.decrypt_window, c.tickets.lifetime) << "decrypt_window defaults to the ticket lifetime";
  EXPECT_EQ(c.log_level, "info");
}

TEST(Config, SessionCopiesAreAnOptInInTwoParts) {
  Config off = Config::parse(kMinimal, "t", "/base");
  EXPECT_FALSE(off.hsm.session_copies);
  EXPECT_FALSE(off.rotation.copyable_keys);
  Config on = Config::parse(kMinimal + "session_copies = true\n[rotation]\ncopyable_keys = true\n", "t", "/base");
  EXPECT_TRUE(on.hsm.session_copies);
  EXPECT_TRUE(on.rotation.copyable_keys);
  expect_error(kMinimal + "session_copies = 1\n", 4, "hsm.session_copies must be true or false");
  expect_error(kMinimal + "[rotation]\ncopyable_keys = \"yes\"\n", 5, "rotation.copyable_keys must be true or false");
}

TEST(Config, DerivationIsOneUnlessSetToTwo) {
  EXPECT_EQ(Config::parse(kMinimal, "t", "/base").rotation.derivation, 1);
  EXPECT_EQ(Config::parse(kMinimal + "[rotation]\nderivation = 2\n", "t", "/base").rotation.derivation, 2);
  expect_error(kMinimal + "[rotation]\nderivation = 3\n", 5, "rotation.derivation must be between 1 and 2");
  expect_error(kMinimal + "[rotation]\nderivation = \"v2\"\n", 5, "rotation.derivation must be an integer");
}

TEST(Config, HsmGuardSettingsTakeMillisecondsAndAreChecked) {
  Config d = Config::parse(kMinimal, "t", "/base");
  EXPECT_EQ(d.hsm.call_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(d.hsm.breaker_threshold, 5u);
  EXPECT_EQ(d.hsm.breaker_backoff, std::chrono::milliseconds(250));
  Config c = Config::parse(kMinimal + "call_timeout = \"150ms\"\nbreaker_threshold = 2\nbreaker_backoff = \"1s\"\n", "t", "");
  EXPECT_EQ(c.hsm.call_timeout, std::chrono::milliseconds(150));
  EXPECT_EQ(c.hsm.breaker_threshold, 2u);
  EXPECT_EQ(c.hsm.breaker_backoff, std::chrono::milliseconds(1000));
  EXPECT_EQ(Config::parse(kMinimal + "call_timeout = 0\n", "t", "").hsm.call_timeout, std::chrono::milliseconds(0));
  expect_error(kMinimal + "call_timeout = \"61s\"\n", 4, "hsm.call_timeout must be between 0ms and 60000ms");
  expect_error(kMinimal + "call_timeout = \"5 ms\"\n", 4, "hsm.call_timeout: invalid duration");
  expect_error(kMinimal + "call_timeout = true\n", 4, "hsm.call_timeout must be a duration");
  expect_error(kMinimal + "breaker_backoff = \"0ms\"\n", 4, "hsm.breaker_backoff must be between 1ms and 60000ms");
  expect_error(kMinimal + "breaker_threshold = 0\n", 4, "hsm.breaker_threshold must be between 1 and 1000");
}

TEST(Config, PinSourcesOtherThanRelativeFilesAreKept) {
  EXPECT_EQ(Config::parse(kMinimal + "pin = \"env:KEYSVC_PIN\"\n", "t", "/base").hsm.pin_source, "env:KEYSVC_PIN");
  EXPECT_EQ(Config::parse(kMinimal + "pin = \"file:/etc/pin\"\n", "t", "/base").hsm.pin_source, "file:/etc/pin");
  EXPECT_EQ(Config::parse(kMinimal + "pin = \"file:p\"\n", "t", "/base").hsm.pin_source, "file:/base/p");
}

// A pin-value in hsm.token is kept in secure memory, never in the config's text.
TEST(Config, PinValueIsNotInTheTokenText) {
  Config c = Config::parse("[hsm]\nmodule = \"/m.so\"\ntoken = \"pkcs11:token=t?pin-value=Cfg%2DPin\"\n", "t", "/base");
  EXPECT_EQ(c.hsm.token_uri.text(), "pkcs11:token=t");
  ASSERT_NE(c.hsm.token_uri.pin_value(), nullptr);
  EXPECT_EQ(c.hsm.token_uri.pin_value()->reveal(), "Cfg-Pin");
  Config copy = c;
  EXPECT_EQ(copy.hsm.token_uri.pin_value()->reveal(), "Cfg-Pin");
}

TEST(Config, ProcessSection) {
  EXPECT_FALSE(Config::parse(kMinimal, "t", "/base").process.core_dumps);
  EXPECT_TRUE(Config::parse(kMinimal + "[process]\ncore_dumps = true\n", "t", "/base").process.core_dumps);
  expect_error(kMinimal + "[process]\ncore_dumps = 1\n", 5, "process.core_dumps must be true or false");
  expect_error(kMinimal + "[process]\ncoredumps = true\n", 5, "unknown key 'process.coredumps'");
}

TEST(Config, IntegerDurationsAreSeconds) {
  Config c = Config::parse(kMinimal + "[tickets]\nlifetime = 600\nmax_session_age = 7200\n", "t", "");
  EXPECT_EQ(c.tickets.lifetime, 600s);
  EXPECT_EQ(c.tickets.max_session_age, 7200s);
}

TEST(Config, AuditSection) {
  Config off = Config::parse(kMinimal, "t", "/base");
  EXPECT_FALSE(off.audit.enabled());
  EXPECT_EQ(off.audit.seal_interval, 60s);
  EXPECT_EQ(off.audit.summary_interval, 60s);
  EXPECT_FALSE(off.audit.per_handshake);
  EXPECT_TRUE(off.audit.fsync);
  EXPECT_EQ(off.audit.anchor_retention, std::chrono::hours(24 * 30));
  EXPECT_FALSE(Config::parse(kMinimal + "[audit]\npath = \"\"\n", "t", "/base").audit.enabled());
  Config on = Config::parse(kMinimal +
                                "[audit]\npath = \"log/audit.jsonl\"\nseal_interval = \"5m\"\n"
                                "summary_interval = 30\nper_handshake = true\nfsync = false\n"
                                "anchor_retention = \"7d\"\n",
                            "t", "/base");
  EXPECT_TRUE(on.audit.enabled());
  EXPECT_EQ(on.audit.path, "/base/log/audit.jsonl");
  EXPECT_EQ(on.audit.seal_interval, 5min);
  EXPECT_EQ(on.audit.summary_interval, 30s);
  EXPECT_TRUE(on.audit.per_handshake);
  EXPECT_FALSE(on.audit.fsync);
  EXPECT_EQ(on.audit.anchor_retention, std::chrono::hours(24 * 7));
}

TEST(ConfigErrors, AuditSectionIsStrict) {
  expect_error(kMinimal + "[audit]\npath = \"a\"\nseal = \"1m\"\n", 6, "unknown key 'audit.seal'");
  expect_error(kMinimal + "[audit]\nseal_interval = \"1y\"\n", 5, "audit.seal_interval");
  expect_error(kMinimal + "[audit]\nper_handshake = \"yes\"\n", 5, "audit.per_handshake must be true or false");
  expect_error(kMinimal + "[audit]\npath = 7\n", 5, "audit.path must be a string");
  expect_error(kMinimal + "[audit]\nanchor_retention = \"soon\"\n", 5, "audit.anchor_retention");
}

TEST(ConfigErrors, UnknownKey) {
  expect_error(kMinimal + "sesions = 4\n", 4, "unknown key 'hsm.sesions'");
  expect_error(kMinimal + "[tickets]\nlifetime = \"1h\"\nlifetyme = \"2h\"\n", 6, "unknown key 'tickets.lifetyme'");
}

TEST(ConfigErrors, UnknownSection) {
  expect_error(kMinimal + "\n[hsmm]\nsessions = 4\n", 5, "unknown section 'hsmm'");
  expect_error("verbose = true\n" + kMinimal, 1, "unknown section 'verbose'");
}

TEST(ConfigErrors, WrongType) {
  expect_error(kMinimal + "sessions = \"4\"\n", 4, "hsm.sessions must be an integer");
  expect_error(kMinimal + "sessions = 4.0\n", 4, "hsm.sessions must be an integer");
  // Beyond int64's range: refused as a float, never converted (that conversion is
  // undefined behaviour, which the UBSan builds and the fuzz seed of the same name catch).
  expect_error(kMinimal + "sessions = 430145145266909266909865.0\n", 4, "hsm.sessions must be an integer");
  expect_error(kMinimal + "breaker_threshold = -1e300\n", 4, "hsm.breaker_threshold must be an integer");
  expect_error(kMinimal + "call_timeout = 1e30\n", 4, "hsm.call_timeout must be a duration");
  expect_error(kMinimal + "[tickets]\nlifetime = 9.3e18\n", 5, "tickets.lifetime must be a duration");
  expect_error("[hsm]\nmodule = 3\ntoken = \"pkcs11:token=t\"\n", 2, "hsm.module must be a string");
  expect_error(kMinimal + "[tickets]\ncreate_if_empty = 1\n", 5, "tickets.create_if_empty must be true or false");
  expect_error(kMinimal + "[tickets]\nlifetime = true\n", 5, "tickets.lifetime must be a duration");
  expect_error(kMinimal + "[log]\nlevel = 5\n", 5, "log.level must be a string");
}

TEST(ConfigErrors, OutOfRange) {
  expect_error(kMinimal + "sessions = 0\n", 4, "hsm.sessions must be between 1 and 256");
  expect_error(kMinimal + "[tickets]\nper_handshake = 17\n", 5, "tickets.per_handshake must be between 0 and 16");
}

TEST(ConfigErrors, BadDuration) {
  expect_error(kMinimal + "[tickets]\nlifetime = \"2x\"\n", 5, "tickets.lifetime: invalid duration '2x'");
  expect_error(kMinimal + "[tickets]\nlifetime = \"\"\n", 5, "tickets.lifetime: invalid duration");
  expect_error(kMinimal + "[tickets]\nlifetime = -5\n", 5, "tickets.lifetime: invalid duration");
  expect_error(kMinimal + "[rotation]\nclock_skew = \"1.5s\"\n", 5, "rotation.clock_skew: invalid duration");
}

TEST(ConfigErrors, MaxSessionAgeBelowLifetime) {
  expect_error(kMinimal + "[tickets]\nlifetime = \"2h\"\nmax_session_age = \"1h\"\n", 6,
               "tickets.max_session_age must be at least tickets.lifetime");
  // Only the lifetime is set (above the 24h default age): its line is named.
  expect_error(kMinimal + "[tickets]\nlifetime = \"25h\"\n", 5,
               "tickets.max_session_age must be at least tickets.lifetime");
}

TEST(ConfigErrors, LifetimeMustBePositive) {
  expect_error(kMinimal + "[tickets]\nlifetime = \"0s\"\n", 5, "tickets.lifetime must be positive");
}

TEST(ConfigErrors, MissingModuleOrToken) {
  expect_error("[hsm]\ntoken = \"pkcs11:token=t\"\n", 1, "hsm.module is required");
  expect_error("# comment\n\n[hsm]\ntoken = \"pkcs11:token=t\"\n", 3, "hsm.module is required");
  expect_error("[hsm]\nmodule = \"/m.so\"\n", 1, "hsm.token is required");
  expect_error("[log]\nlevel = \"info\"\n", 1, "hsm.module is required");
  expect_error("", 1, "hsm.module is required");
}

TEST(ConfigErrors, RotationConstraints) {
  expect_error(kMinimal + "[rotation]\ndecrypt_window = \"1h\"\n", 5,
               "rotation.decrypt_window must be at least tickets.lifetime");
  expect_error(kMinimal + "[rotation]\nrefresh_interval = \"5m\"\npublish_lead = \"5m\"\n", 6,
               "rotation.publish_lead must exceed");
  expect_error(kMinimal + "[rotation]\nencrypt_period = 0\n", 5, "rotation.encrypt_period must be positive");
  // Nothing reaches further than a token record may (key_custody.h).
  for (const char* key : {"encrypt_period", "decrypt_window", "publish_lead"})
    expect_error(kMinimal + "[rotation]\n" + key + " = \"32d\"\n", 5,
                 std::string("rotation.") + key + " must be at most 31d");
  EXPECT_NO_THROW(Config::parse(kMinimal + "[rotation]\nencrypt_period = \"31d\"\ndecrypt_window = \"31d\"\n", "t", ""));
}

TEST(ConfigErrors, BadLogLevel) {
  expect_error(kMinimal + "[log]\nlevel = \"verbose\"\n", 5, "log.level must be one of");
}

TEST(ConfigMetrics, OffUnlessListenIsSet) {
  EXPECT_FALSE(Config::parse(kMinimal, "test.toml", "/base").metrics.enabled());
  EXPECT_FALSE(Config::parse(kMinimal + "[metrics]\nlisten = \"\"\n", "test.toml", "/base").metrics.enabled());
  Config c = Config::parse(kMinimal + "[metrics]\nlisten = \"127.0.0.1:9464\"\n", "test.toml", "/base");
  EXPECT_TRUE(c.metrics.enabled());
  EXPECT_EQ(c.metrics.listen, "127.0.0.1:9464");
}

TEST(ConfigErrors, BadMetricsSection) {
  expect_error(kMinimal + "[metrics]\nlisten = \"localhost:9464\"\n", 5, "metrics.listen: 'localhost' is not a numeric IPv4");
  expect_error(kMinimal + "[metrics]\nlisten = \"127.0.0.1\"\n", 5, "metrics.listen: expected a numeric IPv4 HOST:PORT");
  expect_error(kMinimal + "[metrics]\nlisten = 9464\n", 5, "metrics.listen must be a string");
  expect_error(kMinimal + "[metrics]\naddress = \"127.0.0.1:9464\"\n", 5, "unknown key 'metrics.address'");
}

TEST(ConfigErrors, TomlSyntax) {
  expect_error(kMinimal + "sessions = \n", 4, "");
  expect_error("[hsm\nmodule = \"/m.so\"\n", 1, "");
}

// ---- parse_duration ----

TEST(ParseDuration, Units) {
  EXPECT_EQ(parse_duration("90"), 90s);
  EXPECT_EQ(parse_duration("90s"), 90s);
  EXPECT_EQ(parse_duration("15m"), 15min);
  EXPECT_EQ(parse_duration("2h"), 2h);
  EXPECT_EQ(parse_duration("1d"), 24h);
  EXPECT_EQ(parse_duration("0"), 0s);
  EXPECT_EQ(parse_duration("007m"), 7min);
}

TEST(ParseDuration, Limit) {
  EXPECT_EQ(parse_duration(std::to_string(std::int64_t{1} << 40)), std::chrono::seconds(std::int64_t{1} << 40));
  EXPECT_THROW(parse_duration(std::to_string((std::int64_t{1} << 40) + 1)), ConfigError);
  EXPECT_THROW(parse_duration("99999999999d"), ConfigError);
  EXPECT_THROW(parse_duration("99999999999999999999"), ConfigError);
}

TEST(ParseDuration, Rejects) {
  for (const char* bad : {"", "h", "-1", "-1h", "+1h", "1.5h", "2 h", " 2h", "2h ", "2H", "1w", "2hh", "1h30m", "abc",
                          "0x10"}) {
    try {
      parse_duration(bad);
      FAIL() << "accepted '" << bad << "'";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace keysvc
