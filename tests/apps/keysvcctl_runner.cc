#include "keysvcctl_runner.h"

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <thread>
#include <utility>

#include "process.h"
#include "test_token.h"

namespace keysvc::test::keysvcctl {

namespace {

// ---------------------------------------------------------------- subprocesses

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

// ---------------------------------------------------------------- keysvcctl

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A config next to the test token's (same [hsm] and [tickets], so "file:pin" still
// resolves), with a [rotation] section of short durations. Returns its path.
std::string write_rotation_config(const std::string& file, const std::string& encrypt_period) {
  std::string path = TestToken::get().dir() + "/" + file;
  std::ofstream(path) << read_file(TestToken::get().config_path()) << "\n[rotation]\nencrypt_period = \""
                      << encrypt_period
                      << "\"\npublish_lead = \"20s\"\nrefresh_interval = \"5s\"\nclock_skew = \"1s\"\n";
  return path;
}

}  // namespace

// ---------------------------------------------------------------- subprocesses

Result run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  ScopedEnv scoped(env);
  keysvc::test::RunResult r = keysvc::test::run(argv, "", std::chrono::seconds(60));
  return {r.exit_code.value_or(-1), r.out, r.err};
}

std::string keysvcctl_path() {
  if (const char* dir = std::getenv("KEYSVC_BIN_DIR"); dir && *dir) return std::string(dir) + "/keysvcctl";
  return KEYSVCCTL_PATH;
}

Result ctl(std::vector<std::string> args, const std::map<std::string, std::string>& env) {
  (void)TestToken::get();
  args.insert(args.begin(), keysvcctl_path());
  return run(args, env);
}

Result ctl_config(std::vector<std::string> args) {
  args.insert(args.begin(), {"--config", TestToken::get().config_path()});
  return ctl(std::move(args));
}

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

// ---------------------------------------------------------------- JSON output

Json parse_json(const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << text;
  return j.is_discarded() ? Json() : j;
}

// ---------------------------------------------------------------- keysvcctl

void sleep_until_unix(std::int64_t t) {
  while (unix_now() < t) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

std::string fast_config() { return write_rotation_config("fast.toml", "10s"); }
std::string calm_config() { return write_rotation_config("calm.toml", "60s"); }

Result ctl_with(const std::string& config, std::vector<std::string> args) {
  args.insert(args.begin(), {"--config", config});
  return ctl(std::move(args));
}

Json json_of(const Result& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  return parse_json(r.out);
}

Json list_json(const std::string& config) { return json_of(ctl_with(config, {"keys", "list", "--json"})); }
Json status_json(const std::string& config) { return json_of(ctl_with(config, {"status", "--json"})); }

std::int64_t as_int(const Json& v) { return v.get<std::int64_t>(); }

}  // namespace keysvc::test::keysvcctl
