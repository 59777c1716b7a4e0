// keysvcctl rotate (and its alias keys rotate), run as subprocesses against the test
// process's own SoftHSM token (TestToken): a second run has nothing to do, two rotators
// at once leave a consistent ring, and rotate --every runs until a signal, keeps going
// through token errors and refuses bad durations.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "keysvcctl_runner.h"
#include "process.h"
#include "test_token.h"

namespace {

using keysvc::test::TestToken;
using keysvc::test::count_lines;
using keysvc::test::read_file;
using namespace keysvc::test::keysvcctl;
namespace fs = std::filesystem;

// Usable generations (not revoked, keys present) by encrypt_from.
std::multimap<std::int64_t, std::string> usable_by_start(const Json& list) {
  std::multimap<std::int64_t, std::string> out;
  for (const auto& g : list)
    if (!g.at("revoked").get<bool>() && g.at("has_keys").get<bool>())
      out.emplace(as_int(g.at("encrypt_from_unix")), g.at("name").get<std::string>());
  return out;
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

}  // namespace
