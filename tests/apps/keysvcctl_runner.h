// keysvcctl run as a subprocess against the test process's SoftHSM token (TestToken),
// its JSON output, and configs with short rotation windows: what the keysvcctl_*_test
// binaries (keys, rotate, input, token) share.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace keysvc::test::keysvcctl {

// ---------------------------------------------------------------- subprocesses

// A finished run: its exit code (-1 if it did not end in time) and what it wrote.
struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
  std::string all() const { return out + err; }
};

// Runs argv with extra environment variables, to completion (at most 60 s).
Result run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {});

// The keysvcctl under test: $KEYSVC_BIN_DIR/keysvcctl if that is set, else the one built here.
std::string keysvcctl_path();

// keysvcctl ARGS... against the test token (its SOFTHSM2_CONF is in our environment).
// The test token is made first, so that no keysvcctl run can reach the system's token folder.
Result ctl(std::vector<std::string> args, const std::map<std::string, std::string>& env = {});

// keysvcctl --config <the test token's config> ARGS...
Result ctl_config(std::vector<std::string> args);

// One line on stderr, "keysvcctl: ...", nothing on stdout.
void expect_one_error_line(const Result& r);

// A generation name as keysvcctl prints it: 32 lower-case hex digits.
bool is_key_name(const std::string& s);

// ---------------------------------------------------------------- JSON output

using Json = nlohmann::json;

// keysvcctl's JSON output (a gtest failure and null if it is not JSON).
Json parse_json(const std::string& text);

// ---------------------------------------------------------------- keysvcctl

// Sleeps until the wall clock has reached Unix second `t`.
void sleep_until_unix(std::int64_t t);

// Encrypt windows of 10 s and a 20 s lead: a rotate on an empty token plans 4 windows
// (1 active, 3 pending), and one more every 10 s.
std::string fast_config();
// Windows of 60 s: a rotate creates only the current one, and nothing else for 20 s.
std::string calm_config();

// keysvcctl --config CONFIG ARGS...
Result ctl_with(const std::string& config, std::vector<std::string> args);

// The JSON of a run that must succeed (exit 0, nothing on stderr).
Json json_of(const Result& r);

// `keys list --json` and `status --json` with CONFIG.
Json list_json(const std::string& config);
Json status_json(const std::string& config);

// A JSON number as an integer (Unix times).
std::int64_t as_int(const Json& v);

}  // namespace keysvc::test::keysvcctl
