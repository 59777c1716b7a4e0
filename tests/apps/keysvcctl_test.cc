// keysvcctl and softhsm-config/dev-token, run as subprocesses against real SoftHSM
// tokens: the test process's own token (TestToken) and, for dev-token, a token in a
// temporary folder with its own SOFTHSM2_CONF.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hostile_configs.h"
#include "keysvc/config.h"
#include "keysvc/hsm/object.h"
#include "keysvc/key_name.h"
#include "keysvc/ticket_key_service.h"
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

// ---------------------------------------------------------------- JSON output

using Json = nlohmann::json;

// keysvcctl's JSON output (a gtest failure and null if it is not JSON).
Json parse_json(const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << text;
  return j.is_discarded() ? Json() : j;
}

void expect_held_in_token(const Json& key) {
  EXPECT_TRUE(key.at("sensitive").get<bool>());
  EXPECT_TRUE(key.at("always_sensitive").get<bool>());
  EXPECT_FALSE(key.at("extractable").get<bool>());
  EXPECT_TRUE(key.at("never_extractable").get<bool>());
  EXPECT_TRUE(key.at("sign").get<bool>());
  for (const char* off : {"verify", "encrypt", "decrypt", "wrap", "unwrap", "derive", "copyable", "modifiable"})
    EXPECT_FALSE(key.at(off).get<bool>()) << off;
  EXPECT_TRUE(key.at("held_in_token").get<bool>());
}

// ---------------------------------------------------------------- keysvcctl

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Sleeps until the wall clock has reached Unix second `t`.
void sleep_until_unix(std::int64_t t) {
  while (unix_now() < t) std::this_thread::sleep_for(std::chrono::milliseconds(20));
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
// Encrypt windows of 10 s and a 20 s lead: a rotate on an empty token plans 4 windows
// (1 active, 3 pending), and one more every 10 s.
std::string fast_config() { return write_rotation_config("fast.toml", "10s"); }
// Windows of 60 s: a rotate creates only the current one, and nothing else for 20 s.
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

const Json* find_generation(const Json& list, const std::string& name) {
  for (const auto& g : list)
    if (g.at("name").get<std::string>() == name) return &g;
  return nullptr;
}

std::int64_t as_int(const Json& v) { return v.get<std::int64_t>(); }

// Usable generations (not revoked, keys present) by encrypt_from.
std::multimap<std::int64_t, std::string> usable_by_start(const Json& list) {
  std::multimap<std::int64_t, std::string> out;
  for (const auto& g : list)
    if (!g.at("revoked").get<bool>() && g.at("has_keys").get<bool>())
      out.emplace(as_int(g.at("encrypt_from_unix")), g.at("name").get<std::string>());
  return out;
}

// The secret keys in the token whose CKA_ID is the generation `name` (hex).
std::size_t keys_in_token(const std::string& name) {
  auto id = keysvc::key_name_from_hex(name);
  if (!id) throw std::runtime_error("bad name " + name);
  auto pool = keysvc::test::open_pool(TestToken::get().config());
  return pool->run([&](keysvc::hsm::Session& s) {
    return keysvc::hsm::find_objects(s, {.object_class = CKO_SECRET_KEY, .id = keysvc::hsm::Bytes(id->begin(), id->end())})
        .size();
  });
}

std::string iso_shape() { return "2024-01-01T00:00:00Z"; }

TEST(Keysvcctl, KeysGenerateThenListShowsScheduleAndCustody) {
  TestToken::get().clear();
  Result gen = ctl_config({"keys", "generate"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  ASSERT_EQ(count_lines(gen.out), 1u) << gen.out;
  std::string name = gen.out.substr(0, gen.out.size() - 1);
  EXPECT_TRUE(is_key_name(name)) << name;

  Json v = list_json(TestToken::get().config_path());
  ASSERT_TRUE(v.is_array());
  ASSERT_EQ(v.size(), 1u);
  const Json& g = v[0];
  EXPECT_EQ(g.at("name").get<std::string>(), name);
  EXPECT_EQ(g.at("state").get<std::string>(), "active");
  EXPECT_TRUE(g.at("active").get<bool>());
  for (const char* t : {"created", "encrypt_from", "encrypt_until", "decrypt_until"}) {
    EXPECT_EQ(g.at(t).get<std::string>().size(), iso_shape().size()) << t << " " << g.at(t).get<std::string>();
    EXPECT_EQ(g.at(t).get<std::string>().back(), 'Z') << t;
    EXPECT_TRUE(g[std::string(t) + "_unix"].is_number()) << t;
  }
  // Default [rotation]: one encrypt_period (1h), then decrypt_window (tickets.lifetime, 2h).
  EXPECT_EQ(as_int(g.at("encrypt_from_unix")), as_int(g.at("created_unix")));
  EXPECT_EQ(as_int(g.at("encrypt_until_unix")) - as_int(g.at("encrypt_from_unix")), 3600);
  EXPECT_EQ(as_int(g.at("decrypt_until_unix")) - as_int(g.at("encrypt_until_unix")), 7200);
  EXPECT_FALSE(g.at("revoked").get<bool>());
  EXPECT_TRUE(g.at("has_keys").get<bool>());
  expect_held_in_token(g.at("enc_key"));
  expect_held_in_token(g.at("mac_key"));
  // The default tier: one root key from which the token derives a key per 5-minute epoch.
  EXPECT_EQ(g.at("tier").get<std::string>(), "epoch");
  EXPECT_EQ(g.at("derivation").get<int>(), 3);
  EXPECT_EQ(g.at("epoch_seconds").get<int>(), 300);

  // A second generation starts at least a second after the first, and then encrypts;
  // the first is decrypt-only.
  Result gen2 = ctl_config({"keys", "generate", "--json"});
  ASSERT_EQ(gen2.exit_code, 0) << gen2.err;
  Json g2 = parse_json(gen2.out);
  std::string name2 = g2.at("name").get<std::string>();
  EXPECT_TRUE(is_key_name(name2));
  EXPECT_GE(as_int(g2.at("encrypt_from_unix")), as_int(g.at("encrypt_from_unix")) + 1);
  sleep_until_unix(as_int(g2.at("encrypt_from_unix")));
  Json v2 = list_json(TestToken::get().config_path());
  ASSERT_EQ(v2.size(), 2u);
  EXPECT_EQ(v2[0].at("name").get<std::string>(), name2);  // latest encrypt window first
  for (const auto& e : v2) {
    EXPECT_EQ(e.at("state").get<std::string>(), e.at("name").get<std::string>() == name2 ? "active" : "decrypt-only");
  }

  // Human output: a header and one aligned row per generation.
  Result text = ctl_config({"keys", "list"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(count_lines(text.out), 3u) << text.out;
  for (const std::string& word : {std::string("NAME"), std::string("STATE"), std::string("TIER"),
                                  std::string("epoch 300s"), std::string("ENCRYPT_FROM"),
                                  std::string("DECRYPT_UNTIL"), name, name2, std::string("decrypt-only"),
                                  std::string("active"), std::string("sensitive, never-extractable")})
    EXPECT_NE(text.out.find(word), std::string::npos) << word << "\n" << text.out;
}

TEST(Keysvcctl, ReadOnlyCommandsOnEmptyTokenCreateNothing) {
  TestToken::get().clear();
  const std::string config = fast_config();  // a rotating config: still nothing is created
  Result text = ctl_with(config, {"keys", "list"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, "");
  Result json = ctl_with(config, {"keys", "list", "--json"});
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out, "[]\n");
  Json s = status_json(config);
  EXPECT_EQ(s.at("generations").get<std::int64_t>(), 0);
  EXPECT_TRUE(s.at("encrypt_generation").is_null());
  EXPECT_TRUE(s.at("next_generation").is_null());
  for (const char* state : {"pending", "active", "decrypt-only", "expired", "revoked"})
    EXPECT_EQ(s.at("states").at(state).get<std::int64_t>(), 0) << state;
  Result st = ctl_with(config, {"status"});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(list_json(config).size(), 0u);
}

TEST(Keysvcctl, StatusJson) {
  TestToken::get().clear();
  ASSERT_EQ(ctl_config({"keys", "generate"}).exit_code, 0);
  Result gen = ctl_config({"keys", "generate", "--json"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  Json newest = parse_json(gen.out);
  sleep_until_unix(as_int(newest.at("encrypt_from_unix")));

  Json s = status_json(TestToken::get().config_path());
  EXPECT_EQ(s.at("module").get<std::string>(), keysvc::test::kSoftHsmModule);
  EXPECT_EQ(s.at("token").at("label").get<std::string>(), "keysvc-test");
  EXPECT_FALSE(s.at("token").at("serial").get<std::string>().empty());
  EXPECT_EQ(s.at("token").at("model").get<std::string>(), "SoftHSM v2");
  EXPECT_TRUE(s.at("login").get<bool>());
  EXPECT_EQ(s.at("generations").get<std::int64_t>(), 2);
  EXPECT_EQ(s.at("states").at("active").get<std::int64_t>(), 1);
  EXPECT_EQ(s.at("states").at("decrypt-only").get<std::int64_t>(), 1);
  EXPECT_EQ(s.at("encrypt_generation").get<std::string>(), newest.at("name").get<std::string>());
  EXPECT_EQ(s.at("encrypt_from_unix").get<std::int64_t>(), newest.at("encrypt_from_unix").get<std::int64_t>());
  EXPECT_TRUE(s.at("next_generation").is_null());
  EXPECT_EQ(s.at("covered_until_unix").get<std::int64_t>(), newest.at("encrypt_until_unix").get<std::int64_t>());
  EXPECT_EQ(s.at("now").get<std::string>().size(), iso_shape().size());

  Result text = ctl_config({"status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("keysvc-test"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(newest.at("name").get<std::string>()), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("1 active, 1 decrypt-only"), std::string::npos) << text.out;
}

TEST(Keysvcctl, KeysListShowsPendingActiveAndDecryptOnly) {
  TestToken::get().clear();
  const std::string config = fast_config();
  Result rot = ctl_with(config, {"rotate", "--json"});
  Json r = json_of(rot);
  ASSERT_EQ(r.at("created").size(), 4u) << rot.out;  // [now, now+40s) in 10 s windows
  EXPECT_EQ(r.at("destroyed").size(), 0u);
  const std::string first = r.at("created")[0].at("name").get<std::string>();
  for (std::size_t k = 1; k < 4; ++k)
    EXPECT_EQ(r.at("created")[k].at("encrypt_from_unix").get<std::int64_t>(),
              r.at("created")[k - 1].at("encrypt_until_unix").get<std::int64_t>());

  // keys generate takes over from the rotator's current generation, which becomes
  // decrypt-only; the rotator's later windows stay pending.
  Json gen = json_of(ctl_with(config, {"keys", "generate", "--json"}));
  sleep_until_unix(as_int(gen.at("encrypt_from_unix")));
  Json list = list_json(config);
  ASSERT_EQ(list.size(), 5u) << list.size();
  std::map<std::string, int> states;
  for (const auto& g : list) {
    ++states[g.at("state").get<std::string>()];
    expect_held_in_token(g.at("enc_key"));
  }
  EXPECT_EQ(states.at("pending"), 3);
  EXPECT_EQ(states.at("active"), 1);
  EXPECT_EQ(states.at("decrypt-only"), 1);
  EXPECT_EQ((*find_generation(list, gen.at("name").get<std::string>())).at("state").get<std::string>(), "active");
  EXPECT_EQ((*find_generation(list, first)).at("state").get<std::string>(), "decrypt-only");
  EXPECT_EQ(list.front().at("state").get<std::string>(), "pending");

  Json s = status_json(config);
  EXPECT_EQ(s.at("encrypt_generation").get<std::string>(), gen.at("name").get<std::string>());
  EXPECT_EQ(s.at("next_generation").get<std::string>(), r.at("created")[1].at("name").get<std::string>());
  EXPECT_EQ(s.at("next_encrypt_from_unix").get<std::int64_t>(),
            r.at("created")[1].at("encrypt_from_unix").get<std::int64_t>());
  EXPECT_EQ(s.at("states").at("pending").get<std::int64_t>(), 3);

  Result text = ctl_with(config, {"keys", "list"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(count_lines(text.out), 6u) << text.out;
  for (const char* state : {"pending", "active", "decrypt-only"})
    EXPECT_NE(text.out.find(state), std::string::npos) << state << "\n" << text.out;
}

TEST(Keysvcctl, RotateIsIdempotentAndKeysRotateIsAnAlias) {
  TestToken::get().clear();
  const std::string config = calm_config();
  Result first = ctl_with(config, {"rotate"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(count_lines(first.out), 1u) << first.out;
  EXPECT_EQ(first.out.rfind("created ", 0), 0u) << first.out;
  EXPECT_TRUE(is_key_name(first.out.substr(8, 32))) << first.out;

  Result again = ctl_with(config, {"rotate"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "nothing to do\n");
  Json alias = json_of(ctl_with(config, {"keys", "rotate", "--json"}));
  EXPECT_EQ(alias.at("created").size(), 0u);
  EXPECT_EQ(alias.at("destroyed").size(), 0u);
  EXPECT_EQ(list_json(config).size(), 1u);
  EXPECT_EQ(status_json(config).at("encrypt_generation").get<std::string>(), first.out.substr(8, 32));
}

TEST(Keysvcctl, ConcurrentRotatorsLeaveAConsistentRing) {
  TestToken::get().clear();
  const std::string config = fast_config();
  Json seed = json_of(ctl_with(config, {"rotate", "--json"}));
  ASSERT_EQ(seed.at("created").size(), 4u);
  const std::int64_t t0 = as_int(seed.at("now_unix"));
  // One second later both rotators plan the same fifth window [t0+40s, t0+50s).
  sleep_until_unix(t0 + 1);
  std::vector<std::string> argv = {keysvcctl_path(), "--config", config, "rotate", "--json"};
  keysvc::test::Process a(argv), b(argv);
  // SoftHSM2's file store may fail a process that opens the token while another one
  // writes it (C_GetTokenInfo: CKR_GENERAL_ERROR); a real HSM does not. Such a run
  // fails cleanly (exit 1, one line) and the ring must be consistent all the same.
  std::size_t succeeded = 0, reported = 0;
  for (keysvc::test::Process* p : {&a, &b}) {
    auto code = p->wait(std::chrono::seconds(20));
    ASSERT_TRUE(code) << p->command_line();
    if (*code == 0) {
      ++succeeded;
      reported += parse_json(p->out()).at("created").size();
    } else {
      EXPECT_EQ(*code, 1) << p->err();
      EXPECT_EQ(count_lines(p->err()), 1u) << p->err();
      EXPECT_EQ(p->err().rfind("keysvcctl: rotate: ", 0), 0u) << p->err();
      std::cout << "[          ] one rotator failed: " << p->err();
    }
  }
  ASSERT_GE(succeeded, 1u);

  // Every reader agrees on the encrypt generation and on what comes next.
  Json s1 = status_json(config), s2 = status_json(config);
  EXPECT_EQ(s1.at("encrypt_generation").get<std::string>(), seed.at("created")[0].at("name").get<std::string>());
  EXPECT_EQ(s1.at("encrypt_generation").get<std::string>(), s2.at("encrypt_generation").get<std::string>());
  EXPECT_EQ(s1.at("next_generation").get<std::string>(), s2.at("next_generation").get<std::string>());

  // At most the planned windows are covered: 5 distinct, back to back.
  auto by_start = usable_by_start(list_json(config));
  std::set<std::int64_t> starts;
  for (const auto& [start, name] : by_start) starts.insert(start);
  EXPECT_EQ(starts.size(), 5u);
  EXPECT_EQ(*starts.begin(), t0);
  EXPECT_EQ(*starts.rbegin(), t0 + 40);
  const std::size_t created = by_start.count(t0 + 40);
  EXPECT_GE(created, 1u);
  EXPECT_LE(created, 2u);
  EXPECT_EQ(by_start.size(), 4u + created);
  if (succeeded == 2) {
    EXPECT_EQ(created, reported);
  }
  std::cout << "[          ] concurrent rotators created " << created << " generation(s) for the fifth window\n";

  // A third run removes the losers of the race (while pending), keeping the smallest name.
  std::string winner;
  for (auto [it, end] = by_start.equal_range(t0 + 40); it != end; ++it)
    if (winner.empty() || it->second < winner) winner = it->second;
  Json third = json_of(ctl_with(config, {"rotate", "--json"}));
  EXPECT_EQ(third.at("created").size(), 0u);
  EXPECT_EQ(third.at("destroyed").size(), created - 1);
  auto after = usable_by_start(list_json(config));
  EXPECT_EQ(after.size(), 5u);
  for (const auto& [start, name] : after) EXPECT_EQ(after.count(start), 1u) << "two usable generations start at " << start;
  auto last = after.find(t0 + 40);
  ASSERT_NE(last, after.end());
  EXPECT_EQ(last->second, winner);
  EXPECT_EQ(status_json(config).at("encrypt_generation").get<std::string>(),
            s1.at("encrypt_generation").get<std::string>());
}

TEST(Keysvcctl, RevokeActiveGenerationReplacesIt) {
  TestToken::get().clear();
  const std::string config = calm_config();
  ASSERT_EQ(ctl_with(config, {"rotate"}).exit_code, 0);
  const std::string active = status_json(config).at("encrypt_generation").get<std::string>();
  ASSERT_TRUE(is_key_name(active));
  ASSERT_EQ(keys_in_token(active), 1u);  // the epoch tier's root key

  Result r = ctl_with(config, {"keys", "revoke", active});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("revoked " + active), std::string::npos) << r.out;

  Json list = list_json(config);
  ASSERT_EQ(list.size(), 2u);
  const Json* revoked = find_generation(list, active);
  ASSERT_NE(revoked, nullptr);
  EXPECT_EQ((*revoked).at("state").get<std::string>(), "revoked");
  EXPECT_TRUE((*revoked).at("revoked").get<bool>());
  EXPECT_EQ((*revoked).at("revoked_at").get<std::string>().size(), iso_shape().size());
  EXPECT_FALSE((*revoked).at("has_keys").get<bool>());
  EXPECT_TRUE((*revoked).at("enc_key").is_null());
  EXPECT_EQ(keys_in_token(active), 0u);  // the keys are gone from the token

  Json s = status_json(config);
  ASSERT_TRUE(s.at("encrypt_generation").is_string());
  const std::string replacement = s.at("encrypt_generation").get<std::string>();
  EXPECT_NE(replacement, active);
  EXPECT_EQ((*find_generation(list, replacement)).at("state").get<std::string>(), "active");
  EXPECT_EQ(s.at("states").at("revoked").get<std::int64_t>(), 1);
  EXPECT_NE(r.out.find("encrypting under " + replacement), std::string::npos) << r.out;

  Result text = ctl_with(config, {"keys", "list"});
  EXPECT_NE(text.out.find("keys destroyed"), std::string::npos) << text.out;

  // Revoking a generation that does not encrypt creates nothing.
  Json gen = json_of(ctl_with(config, {"keys", "generate", "--json"}));
  sleep_until_unix(as_int(gen.at("encrypt_from_unix")));
  Json rj = json_of(ctl_with(config, {"keys", "revoke", "--json", replacement}));
  EXPECT_EQ(rj.at("revoked").get<std::string>(), replacement);
  EXPECT_FALSE(rj.at("was_active").get<bool>());
  EXPECT_EQ(rj.at("encrypt_generation").get<std::string>(), gen.at("name").get<std::string>());
  EXPECT_EQ(list_json(config).size(), 3u);
}

TEST(Keysvcctl, DestroyRemovesGenerationOrRevocation) {
  TestToken::get().clear();
  const std::string config = calm_config();
  std::string a = json_of(ctl_with(config, {"keys", "generate", "--json"})).at("name").get<std::string>();
  Json b = json_of(ctl_with(config, {"keys", "generate", "--json"}));
  sleep_until_unix(as_int(b.at("encrypt_from_unix")));

  Result r = ctl_with(config, {"keys", "destroy", a});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "destroyed " + a + "\n");
  EXPECT_EQ(keys_in_token(a), 0u);
  Json list = list_json(config);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].at("name").get<std::string>(), b.at("name").get<std::string>());

  // Again: unknown now.
  Result again = ctl_with(config, {"keys", "destroy", a});
  EXPECT_EQ(again.exit_code, 1);
  expect_one_error_line(again);

  // A revoked generation's record goes too.
  ASSERT_EQ(ctl_with(config, {"keys", "revoke", b.at("name").get<std::string>()}).exit_code, 0);
  ASSERT_NE(find_generation(list_json(config), b.at("name").get<std::string>()), nullptr);
  Json d = json_of(ctl_with(config, {"keys", "destroy", "--json", b.at("name").get<std::string>()}));
  EXPECT_EQ(d.at("destroyed").get<std::string>(), b.at("name").get<std::string>());
  EXPECT_EQ(find_generation(list_json(config), b.at("name").get<std::string>()), nullptr);
}

TEST(Keysvcctl, RevokeAndDestroyCheckTheName) {
  TestToken::get().clear();
  const std::string config = calm_config();
  ASSERT_EQ(ctl_with(config, {"rotate"}).exit_code, 0);
  for (const char* verb : {"revoke", "destroy"}) {
    for (const std::string& bad : {std::string("xyz"), std::string(31, 'a'), std::string(33, 'a'),
                                   std::string(32, 'g'), std::string("0x") + std::string(30, '0')}) {
      Result r = ctl_with(config, {"keys", verb, bad});
      EXPECT_EQ(r.exit_code, 2) << verb << " " << bad << ": " << r.err;
      expect_one_error_line(r);
    }
    Result missing = ctl_with(config, {"keys", verb});
    EXPECT_EQ(missing.exit_code, 2) << missing.err;
    expect_one_error_line(missing);

    Result unknown = ctl_with(config, {"keys", verb, std::string(32, '0')});
    EXPECT_EQ(unknown.exit_code, 1) << unknown.err;
    expect_one_error_line(unknown);
    EXPECT_NE(unknown.err.find(std::string(32, '0')), std::string::npos) << unknown.err;
  }
  // Upper case names are accepted.
  std::string name = status_json(config).at("encrypt_generation").get<std::string>();
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Result r = ctl_with(config, {"keys", "revoke", upper});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(name), std::string::npos) << r.out;
  EXPECT_EQ(list_json(config).size(), 2u);  // the revoked one and its replacement
}

TEST(Keysvcctl, RotateEveryRunsAndStopsOnSigterm) {
  TestToken::get().clear();
  const std::string config = calm_config();
  keysvc::test::Process p({keysvcctl_path(), "--config", config, "rotate", "--every", "1s"});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (p.out().find("created ") == std::string::npos && std::chrono::steady_clock::now() < deadline &&
         !p.poll())
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_NE(p.out().find("created "), std::string::npos) << p.out() << p.err();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // at least one more run: nothing to do
  EXPECT_EQ(count_lines(p.out()), 2u) << p.out();  // "rotating every 1s ...", "created ..."
  EXPECT_EQ(status_json(config).at("generations").get<std::int64_t>(), 1);

  auto sent = std::chrono::steady_clock::now();
  p.signal(SIGTERM);
  auto code = p.wait(std::chrono::seconds(5));
  auto took = std::chrono::steady_clock::now() - sent;
  ASSERT_EQ(code, 0) << p.err();
  EXPECT_LT(took, std::chrono::seconds(2));
  EXPECT_TRUE(p.err().empty()) << p.err();
  EXPECT_NE(p.out().find("stopped by SIGTERM"), std::string::npos) << p.out();

  // --json: one JSON object per line and run; SIGINT stops it too.
  keysvc::test::Process j({keysvcctl_path(), "--config", config, "rotate", "--every", "1s", "--json"});
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (count_lines(j.out()) < 2 && std::chrono::steady_clock::now() < deadline && !j.poll())
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  j.signal(SIGINT);
  ASSERT_EQ(j.wait(std::chrono::seconds(5)), 0) << j.err();
  std::istringstream lines(j.out());
  std::size_t n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    Json run = parse_json(line);
    EXPECT_EQ(run.at("created").size(), 0u) << line;
  }
  EXPECT_GE(n, 2u) << j.out();
}

TEST(Keysvcctl, RotateEveryLogsTokenErrorsAndKeepsGoing) {
  TestToken::get().clear();
  // 2 s windows: every run or two creates a generation, so every run writes to the token.
  const std::string config = TestToken::get().dir() + "/tiny.toml";
  std::ofstream(config) << read_file(TestToken::get().config_path())
                        << "\n[rotation]\nencrypt_period = \"2s\"\npublish_lead = \"6s\"\n"
                           "refresh_interval = \"2s\"\nclock_skew = \"1s\"\n";
  keysvc::test::Process p({keysvcctl_path(), "--config", config, "rotate", "--every", "1s"});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (p.out().find("created ") == std::string::npos && std::chrono::steady_clock::now() < deadline && !p.poll())
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_NE(p.out().find("created "), std::string::npos) << p.out() << p.err();

  // Take the token away (SoftHSM keeps it in this folder) until the rotator reports it.
  const std::string tokens = TestToken::get().dir() + "/tokens";
  fs::rename(tokens, tokens + ".away");
  auto logged = p.wait_for_stderr(std::regex("keysvcctl: rotate: [^\n]*\\(retrying in 1s\\)\n"), std::chrono::seconds(8));
  fs::rename(tokens + ".away", tokens);
  ASSERT_TRUE(logged) << p.err();
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_FALSE(p.poll()) << "the rotator stopped: " << p.err();
  std::istringstream lines(p.err());
  for (std::string line; std::getline(lines, line);) {
    EXPECT_EQ(line.rfind("keysvcctl: rotate: ", 0), 0u) << line;
    EXPECT_NE(line.find("(retrying in 1s)"), std::string::npos) << line;
  }
  EXPECT_EQ((p.out() + p.err()).find(TestToken::get().pin()), std::string::npos);
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(std::chrono::seconds(3)), 0) << p.err();
}

TEST(Keysvcctl, RotateEveryRejectsBadDurations) {
  for (const char* bad : {"0", "0s", "soon", "-5s", "5x"}) {
    Result r = ctl_config({"rotate", "--every", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    expect_one_error_line(r);
  }
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
           {"keys", "revoke", "--help"}, {"keys", "destroy", "--help"}, {"keys", "rotate", "--help"},
           {"rotate", "--help"}, {"status", "--help"}, {"token", "--help"}, {"token", "init", "--help"}}) {
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

// Bad configs, URIs, PINs and arguments, including the commands that write to the token:
// one "keysvcctl: ..." line, exit 1 or 2, no PIN in the output, and the token's objects
// exactly as before.
TEST(Keysvcctl, HostileInputChangesNothingInTheToken) {
  TestToken::get().clear();
  ASSERT_EQ(ctl_config({"rotate"}).exit_code, 0);  // a generation to keep
  const auto before = TestToken::get().objects();
  ASSERT_FALSE(before.empty());
  auto expect_refused = [&](const Result& r, const std::string& what, const std::string& secret) {
    EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << what << ": exit " << r.exit_code << "\n" << r.err;
    expect_one_error_line(r);
    if (!secret.empty()) {
      EXPECT_EQ(r.all().find(secret), std::string::npos) << what << " printed its PIN";
    }
    EXPECT_EQ(r.all().find(TestToken::get().pin()), std::string::npos) << what << " printed the PIN";
    EXPECT_EQ(TestToken::get().objects(), before) << what << " changed the token";
  };
  for (const auto& c : keysvc::test::write_hostile_configs(TestToken::get().dir() + "/hostile-ctl")) {
    std::map<std::string, std::string> env(c.env.begin(), c.env.end());
    // The two commands that write to the token when the config is good.
    for (std::vector<std::string> command : {std::vector<std::string>{"rotate"}, {"keys", "generate"}}) {
      command.insert(command.begin(), {"--config", c.path});
      expect_refused(ctl(command, env), c.name + " " + command[2], c.secret);
    }
  }
  const std::string unknown(32, 'a');
  const std::vector<std::vector<std::string>> bad_arguments = {
      {"keys", "revoke"},
      {"keys", "revoke", "not-a-name"},
      {"keys", "revoke", unknown},
      {"keys", "destroy", unknown},
      {"keys", "destroy", std::string(33, 'b')},
      {"keys", "generate", "--bogus"},
      {"rotate", "--every"},
      {"rotate", "--every", "-1s"},
      {"rotate", "extra"},
      {"frobnicate"},
      {"audit", "verify", TestToken::get().dir() + "/no-such.log"},
  };
  for (const auto& args : bad_arguments) expect_refused(ctl_config(args), ::testing::PrintToString(args), "");
  EXPECT_EQ(ctl({"keys", "list"}).exit_code, 2);  // no --config at all
  EXPECT_EQ(TestToken::get().objects(), before);
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
  EXPECT_EQ(parse_json(status.out).at("token").at("label").get<std::string>(), label);

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
      ctl_config({"rotate"}),
      ctl_config({"keys", "generate"}),
      ctl_config({"keys", "generate", "--json"}),
      ctl_config({"keys", "list"}),
      ctl_config({"keys", "list", "--json"}),
      ctl_config({"status"}),
      ctl_config({"status", "--json"}),
      ctl_config({"keys", "revoke", std::string(32, 'f')}),
      ctl_config({"keys", "list", pin}),   // a PIN pasted on the command line
      ctl_config({"keys", "revoke", pin}),
      ctl_config({"keys", "destroy", pin}),
      ctl_config({"rotate", "--every", pin}),
      ctl_config({"status", "--pin", pin}),
      ctl_config({"--pin=" + pin, "status"}),
      ctl({"token", "init", "--module", keysvc::test::kSoftHsmModule, "--label", "x", "--pin-source", pin,
           "--so-pin-source", pin}),
  };
  for (std::size_t k = 0; k < results.size(); ++k) {
    EXPECT_EQ(results[k].all().find(pin), std::string::npos) << "command " << k << ": " << results[k].all();
    if (k == 7) {
      EXPECT_EQ(results[k].exit_code, 1) << results[k].err;  // unknown name
    }
    if (k >= 8) {
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
  Json s = parse_json(status.out);
  EXPECT_EQ(s.at("token").at("label").get<std::string>(), "keysvc");
  std::string serial = s.at("token").at("serial").get<std::string>();

  // Second run: same token, same PINs, config untouched.
  Result second = dev_token();
  ASSERT_EQ(second.exit_code, 0) << second.all();
  EXPECT_NE(second.out.find("keeping"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("export SOFTHSM2_CONF="), std::string::npos) << second.out;
  EXPECT_EQ(read_file(dir_ + "/pin"), pin);
  EXPECT_EQ(read_file(dir_ + "/so-pin"), so_pin);
  Result status2 = ctl_dev({"status", "--json"});
  ASSERT_EQ(status2.exit_code, 0) << status2.err;
  EXPECT_EQ(parse_json(status2.out).at("token").at("serial").get<std::string>(), serial);
}

}  // namespace
