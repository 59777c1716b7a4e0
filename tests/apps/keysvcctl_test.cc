// keysvcctl and softhsm-config/dev-token, run as subprocesses against real SoftHSM
// tokens: the test process's own token (TestToken) and, for dev-token, a token in a
// temporary folder with its own SOFTHSM2_CONF.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "keysvc/config.h"
#include "process.h"
#include "test_token.h"

namespace {

using keysvc::test::TestToken;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- subprocesses

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
  std::string all() const { return out + err; }
};

// Sets environment variables for the life of the object (an empty value unsets), and
// restores the previous values. The tests are single-threaded.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::string>& vars) {
    for (const auto& [k, v] : vars) {
      const char* old = std::getenv(k.c_str());
      saved_.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
      set(k, v.empty() ? std::nullopt : std::optional<std::string>(v));
    }
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) set(it->first, it->second);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  static void set(const std::string& k, const std::optional<std::string>& v) {
    if (v) ::setenv(k.c_str(), v->c_str(), 1);
    else ::unsetenv(k.c_str());
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// Runs argv with extra environment variables, to completion (at most 60 s).
Result run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {}) {
  ScopedEnv scoped(env);
  keysvc::test::RunResult r = keysvc::test::run(argv, "", std::chrono::seconds(60));
  return {r.exit_code.value_or(-1), r.out, r.err};
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

std::string keysvcctl_path() {
  if (const char* dir = std::getenv("KEYSVC_BIN_DIR"); dir && *dir) return std::string(dir) + "/keysvcctl";
  return KEYSVCCTL_PATH;
}

std::string source_dir() { return env_or("KEYSVC_SOURCE_DIR", KEYSVC_SOURCE_DIR_DEFAULT); }

// keysvcctl ARGS... against the test token (its SOFTHSM2_CONF is in our environment).
// The test token is made first, so that no keysvcctl run can reach the system's token folder.
Result ctl(std::vector<std::string> args, const std::map<std::string, std::string>& env = {}) {
  (void)TestToken::get();
  args.insert(args.begin(), keysvcctl_path());
  return run(args, env);
}

Result ctl_config(std::vector<std::string> args) {
  args.insert(args.begin(), {"--config", TestToken::get().config_path()});
  return ctl(std::move(args));
}

using keysvc::test::count_lines;

// One line on stderr, "keysvcctl: ...", nothing on stdout.
void expect_one_error_line(const Result& r) {
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("keysvcctl: ", 0), 0u) << r.err;
}

bool is_key_name(const std::string& s) {
  if (s.size() != 32) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c)) || std::isupper(static_cast<unsigned char>(c))) return false;
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------- a small JSON reader

struct JsonValue {
  enum Type { kNull, kBool, kNumber, kString, kArray, kObject } type = kNull;
  bool b = false;
  double number = 0;
  std::string str;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;

  const JsonValue& operator[](const std::string& key) const {
    for (const auto& [k, v] : object)
      if (k == key) return v;
    throw std::runtime_error("no member " + key);
  }
  bool has(const std::string& key) const {
    for (const auto& kv : object)
      if (kv.first == key) return true;
    return false;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  JsonValue parse() {
    JsonValue v = value();
    skip();
    if (i_ != s_.size()) fail("trailing text");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) { throw std::runtime_error("JSON: " + what + " at " + std::to_string(i_)); }
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(const std::string& word) {
    skip();
    if (s_.compare(i_, word.size(), word) != 0) return false;
    i_ += word.size();
    return true;
  }
  std::string string() {
    if (!eat("\"")) fail("expected string");
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        char e = s_.at(i_++);
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'u': out += static_cast<char>(std::stoi(s_.substr(i_, 4), nullptr, 16)); i_ += 4; break;
          default: out += e;
        }
      } else {
        out += c;
      }
    }
    if (!eat("\"")) fail("unterminated string");
    return out;
  }
  JsonValue value() {
    JsonValue v;
    skip();
    if (i_ >= s_.size()) fail("unexpected end");
    char c = s_[i_];
    if (c == '{') {
      ++i_;
      v.type = JsonValue::kObject;
      if (eat("}")) return v;
      do {
        std::string key = string();
        if (!eat(":")) fail("expected ':'");
        v.object.emplace_back(key, value());
      } while (eat(","));
      if (!eat("}")) fail("expected '}'");
    } else if (c == '[') {
      ++i_;
      v.type = JsonValue::kArray;
      if (eat("]")) return v;
      do v.array.push_back(value());
      while (eat(","));
      if (!eat("]")) fail("expected ']'");
    } else if (c == '"') {
      v.type = JsonValue::kString;
      v.str = string();
    } else if (eat("true")) {
      v.type = JsonValue::kBool;
      v.b = true;
    } else if (eat("false")) {
      v.type = JsonValue::kBool;
    } else if (eat("null")) {
    } else {
      std::size_t used = 0;
      v.type = JsonValue::kNumber;
      v.number = std::stod(s_.substr(i_), &used);
      i_ += used;
    }
    return v;
  }
  const std::string& s_;
  std::size_t i_ = 0;
};

JsonValue parse_json(const std::string& text) { return JsonParser(text).parse(); }

void expect_held_in_token(const JsonValue& key) {
  EXPECT_TRUE(key["sensitive"].b);
  EXPECT_TRUE(key["always_sensitive"].b);
  EXPECT_FALSE(key["extractable"].b);
  EXPECT_TRUE(key["never_extractable"].b);
  EXPECT_TRUE(key["sign"].b);
  for (const char* off : {"verify", "encrypt", "decrypt", "wrap", "unwrap", "derive", "copyable", "modifiable"})
    EXPECT_FALSE(key[off].b) << off;
  EXPECT_TRUE(key["held_in_token"].b);
}

// ---------------------------------------------------------------- keysvcctl

TEST(Keysvcctl, KeysGenerateThenListShowsCustody) {
  TestToken::get().clear();
  Result gen = ctl_config({"keys", "generate"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  ASSERT_EQ(count_lines(gen.out), 1u) << gen.out;
  std::string name = gen.out.substr(0, gen.out.size() - 1);
  EXPECT_TRUE(is_key_name(name)) << name;

  Result list = ctl_config({"keys", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(list.err.empty()) << list.err;
  JsonValue v = parse_json(list.out);
  ASSERT_EQ(v.type, JsonValue::kArray);
  ASSERT_EQ(v.array.size(), 1u);
  const JsonValue& g = v.array[0];
  EXPECT_EQ(g["name"].str, name);
  EXPECT_EQ(g["state"].str, "active");
  EXPECT_TRUE(g["active"].b);
  EXPECT_EQ(g["created"].str.size(), std::string("2024-01-01T00:00:00Z").size()) << g["created"].str;
  EXPECT_EQ(g["created"].str.back(), 'Z');
  expect_held_in_token(g["enc_key"]);
  expect_held_in_token(g["mac_key"]);

  // A second generation becomes active; the first is decrypt-only.
  Result gen2 = ctl_config({"keys", "generate", "--json"});
  ASSERT_EQ(gen2.exit_code, 0) << gen2.err;
  std::string name2 = parse_json(gen2.out)["name"].str;
  EXPECT_TRUE(is_key_name(name2));
  JsonValue v2 = parse_json(ctl_config({"keys", "list", "--json"}).out);
  ASSERT_EQ(v2.array.size(), 2u);
  for (const auto& e : v2.array) {
    EXPECT_EQ(e["state"].str, e["name"].str == name2 ? "active" : "decrypt-only");
  }

  // Human output: a header and one aligned row per generation.
  Result text = ctl_config({"keys", "list"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(count_lines(text.out), 3u) << text.out;
  EXPECT_NE(text.out.find("NAME"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(name), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("decrypt-only"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("sensitive, never-extractable"), std::string::npos) << text.out;
}

TEST(Keysvcctl, KeysListOnEmptyTokenCreatesNothing) {
  TestToken::get().clear();
  Result text = ctl_config({"keys", "list"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, "");
  Result json = ctl_config({"keys", "list", "--json"});
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out, "[]\n");
  Result status = ctl_config({"status", "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(parse_json(status.out)["generations"].number, 0);
  EXPECT_EQ(parse_json(status.out)["encrypt_generation"].type, JsonValue::kNull);
}

TEST(Keysvcctl, StatusJson) {
  TestToken::get().clear();
  ASSERT_EQ(ctl_config({"keys", "generate"}).exit_code, 0);
  Result gen = ctl_config({"keys", "generate"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  std::string newest = gen.out.substr(0, 32);

  Result r = ctl_config({"status", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  JsonValue s = parse_json(r.out);
  EXPECT_EQ(s["module"].str, keysvc::test::kSoftHsmModule);
  EXPECT_EQ(s["token"]["label"].str, "keysvc-test");
  EXPECT_FALSE(s["token"]["serial"].str.empty());
  EXPECT_EQ(s["token"]["model"].str, "SoftHSM v2");
  EXPECT_TRUE(s["login"].b);
  EXPECT_EQ(s["generations"].number, 2);
  EXPECT_EQ(s["encrypt_generation"].str, newest);

  Result text = ctl_config({"status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("keysvc-test"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(newest), std::string::npos) << text.out;
}

TEST(Keysvcctl, UsageErrorsExitTwoWithOneLine) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {}, {"keys"}, {"keys", "lst"}, {"--bogus", "status"}, {"status", "--frob"}, {"token", "init"},
           {"keys", "list"} /* no --config */}) {
    Result r = ctl(args);
    std::string what;
    for (const auto& a : args) what += a + " ";
    EXPECT_EQ(r.exit_code, 2) << what << r.err;
    expect_one_error_line(r);
  }
}

TEST(Keysvcctl, HelpEverywhere) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--help"}, {"keys", "--help"}, {"keys", "list", "--help"}, {"keys", "generate", "--help"},
           {"status", "--help"}, {"token", "--help"}, {"token", "init", "--help"}}) {
    Result r = ctl(args);
    EXPECT_EQ(r.exit_code, 0) << args.front() << r.err;
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << r.out;
    EXPECT_TRUE(r.err.empty()) << r.err;
  }
}

TEST(Keysvcctl, MissingConfigExitsOneWithOneLine) {
  Result r = ctl({"--config", TestToken::get().dir() + "/no-such.toml", "keys", "list"});
  EXPECT_EQ(r.exit_code, 1);
  expect_one_error_line(r);
  EXPECT_NE(r.err.find("no-such.toml"), std::string::npos) << r.err;
}

TEST(Keysvcctl, BrokenConfigExitsOneWithOneLine) {
  std::string path = TestToken::get().dir() + "/broken.toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << keysvc::test::kSoftHsmModule << "\"\ntokn = \"x\"\n";
  Result r = ctl({"--config", path, "status"});
  EXPECT_EQ(r.exit_code, 1);
  expect_one_error_line(r);
}

TEST(Keysvcctl, BadPinSourceRejected) {
  const std::string module = keysvc::test::kSoftHsmModule;
  // A PIN where a source belongs: a usage error that does not repeat the value.
  Result literal = ctl({"token", "init", "--module", module, "--label", "x", "--pin-source", "s3cr3t-pin",
                        "--so-pin-source", "env:SO"});
  EXPECT_EQ(literal.exit_code, 2);
  expect_one_error_line(literal);
  EXPECT_EQ(literal.err.find("s3cr3t-pin"), std::string::npos) << literal.err;
  EXPECT_NE(literal.err.find("--pin-source"), std::string::npos) << literal.err;

  Result empty = ctl({"token", "init", "--module", module, "--label", "x", "--pin-source", "file:",
                      "--so-pin-source", "env:SO"});
  EXPECT_EQ(empty.exit_code, 2);
  expect_one_error_line(empty);

  // Well-formed but unreadable: a failure, before the token is touched.
  Result unset = ctl({"token", "init", "--module", module, "--label", "x", "--pin-source",
                      "env:KEYSVCCTL_TEST_UNSET", "--so-pin-source", "env:KEYSVCCTL_TEST_UNSET"},
                     {{"KEYSVCCTL_TEST_UNSET", ""}});
  EXPECT_EQ(unset.exit_code, 1);
  expect_one_error_line(unset);

  // A config whose pin is not a source.
  std::string path = TestToken::get().dir() + "/literal-pin.toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << module << "\"\ntoken = \"" << TestToken::get().token_uri()
                      << "\"\npin = \"s3cr3t-pin\"\n";
  Result cfg = ctl({"--config", path, "status"});
  EXPECT_EQ(cfg.exit_code, 1);
  expect_one_error_line(cfg);
  EXPECT_EQ(cfg.err.find("s3cr3t-pin"), std::string::npos) << cfg.err;
}

TEST(Keysvcctl, TokenInitMakesAUsableToken) {
  // The test token's SoftHSM keeps a free slot: initialise a second token in it.
  const std::string label = "ctl-" + keysvc::test::random_text(8);
  const std::string pin = keysvc::test::random_text(16), so_pin = keysvc::test::random_text(16);
  std::map<std::string, std::string> env = {{"CTL_TEST_PIN", pin}, {"CTL_TEST_SO_PIN", so_pin}};
  std::vector<std::string> init = {"token", "init", "--module", keysvc::test::kSoftHsmModule, "--label", label,
                                   "--pin-source", "env:CTL_TEST_PIN", "--so-pin-source", "env:CTL_TEST_SO_PIN"};
  Result r = ctl(init, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(label), std::string::npos) << r.out;
  EXPECT_EQ(r.all().find(pin), std::string::npos);
  EXPECT_EQ(r.all().find(so_pin), std::string::npos);

  std::string path = TestToken::get().dir() + "/second.toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << keysvc::test::kSoftHsmModule << "\"\ntoken = \"pkcs11:token="
                      << label << "\"\npin = \"env:CTL_TEST_PIN\"\n";
  Result status = ctl({"--config", path, "status", "--json"}, env);
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(parse_json(status.out)["token"]["label"].str, label);

  // The same label again: refused, and no second token with that label appears.
  Result again = ctl(init, env);
  EXPECT_EQ(again.exit_code, 1);
  expect_one_error_line(again);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  EXPECT_EQ(ctl({"--config", path, "status"}, env).exit_code, 0);

  // Labels that would need escaping in a PKCS#11 URI are refused.
  init[5] = "a;b";
  EXPECT_EQ(ctl(init, env).exit_code, 2);
}

TEST(Keysvcctl, PinNeverAppearsInOutput) {
  const std::string& pin = TestToken::get().pin();
  std::vector<Result> results = {
      ctl_config({"keys", "generate"}),
      ctl_config({"keys", "generate", "--json"}),
      ctl_config({"keys", "list"}),
      ctl_config({"keys", "list", "--json"}),
      ctl_config({"status"}),
      ctl_config({"status", "--json"}),
      ctl_config({"keys", "list", pin}),   // a PIN pasted on the command line
      ctl_config({"status", "--pin", pin}),
      ctl_config({"--pin=" + pin, "status"}),
      ctl({"token", "init", "--module", keysvc::test::kSoftHsmModule, "--label", "x", "--pin-source", pin,
           "--so-pin-source", pin}),
  };
  for (std::size_t k = 0; k < results.size(); ++k) {
    EXPECT_EQ(results[k].all().find(pin), std::string::npos) << "command " << k << ": " << results[k].all();
    if (k >= 6) {
      EXPECT_EQ(results[k].exit_code, 2) << k << results[k].err;
    }
  }
}

// ---------------------------------------------------------------- dev-token

class DevToken : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string root = env_or("KEYSVC_TEST_TMPDIR", "/tmp");
    fs::create_directories(root);
    std::string tmpl = root + "/dev-token-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    dir_ = base_ + "/token";  // dev-token creates it
  }
  void TearDown() override { fs::remove_all(base_); }

  Result dev_token() {
    (void)TestToken::get();  // SOFTHSM2_CONF is overridden below; never the system's
    return run({source_dir() + "/softhsm-config/dev-token", dir_},
               {{"SOFTHSM2_CONF", dir_ + "/softhsm2.conf"},
                {"KEYSVC_BIN_DIR", fs::path(keysvcctl_path()).parent_path().string()}});
  }
  Result ctl_dev(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", dir_ + "/keysvc.toml"});
    return ctl(args, {{"SOFTHSM2_CONF", dir_ + "/softhsm2.conf"}});
  }
  static unsigned mode_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return 0;
    return st.st_mode & 07777;
  }

  std::string base_;
  std::string dir_;
};

TEST_F(DevToken, CreatesTokenPinsAndConfigIdempotently) {
  Result first = dev_token();
  ASSERT_EQ(first.exit_code, 0) << first.all();
  EXPECT_NE(first.out.find("export SOFTHSM2_CONF=" + dir_ + "/softhsm2.conf"), std::string::npos) << first.out;

  EXPECT_EQ(mode_of(dir_ + "/pin"), 0600u);
  EXPECT_EQ(mode_of(dir_ + "/so-pin"), 0600u);
  std::string pin = read_file(dir_ + "/pin"), so_pin = read_file(dir_ + "/so-pin");
  ASSERT_EQ(pin.size(), 33u);  // 32 hex digits and a newline
  EXPECT_NE(pin, so_pin);
  EXPECT_EQ(first.all().find(pin.substr(0, 32)), std::string::npos);
  EXPECT_EQ(first.all().find(so_pin.substr(0, 32)), std::string::npos);

  std::string conf = read_file(dir_ + "/softhsm2.conf");
  EXPECT_NE(conf.find("directories.tokendir = " + dir_ + "/tokens"), std::string::npos) << conf;
  EXPECT_EQ(conf.find("tokendir = /var/lib/softhsm"), std::string::npos) << conf;

  keysvc::Config config = keysvc::Config::load_file(dir_ + "/keysvc.toml");
  EXPECT_EQ(config.hsm.module, "/usr/lib/softhsm/libsofthsm2.so");
  EXPECT_EQ(config.hsm.token_uri, "pkcs11:token=keysvc");
  EXPECT_EQ(config.hsm.pin_source, "file:" + dir_ + "/pin");
  EXPECT_EQ(config.tickets.per_handshake, 2);
  EXPECT_EQ(config.tickets.lifetime, std::chrono::hours(2));
  EXPECT_EQ(config.tickets.max_session_age, std::chrono::hours(24));

  Result status = ctl_dev({"status", "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  JsonValue s = parse_json(status.out);
  EXPECT_EQ(s["token"]["label"].str, "keysvc");
  std::string serial = s["token"]["serial"].str;

  // Second run: same token, same PINs, config untouched.
  Result second = dev_token();
  ASSERT_EQ(second.exit_code, 0) << second.all();
  EXPECT_NE(second.out.find("keeping"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("export SOFTHSM2_CONF="), std::string::npos) << second.out;
  EXPECT_EQ(read_file(dir_ + "/pin"), pin);
  EXPECT_EQ(read_file(dir_ + "/so-pin"), so_pin);
  Result status2 = ctl_dev({"status", "--json"});
  ASSERT_EQ(status2.exit_code, 0) << status2.err;
  EXPECT_EQ(parse_json(status2.out)["token"]["serial"].str, serial);
}

}  // namespace
