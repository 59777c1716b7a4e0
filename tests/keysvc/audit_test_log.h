// Shared by the audit tests (tests/keysvc/audit_*_test.cc, tests/apps/keysvcctl_audit_test.cc):
// writes a realistic audit log through AuditLog, sealed with the test token's audit key,
// and small file helpers for tampering with it.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "keysvc/audit_key.h"
#include "keysvc/audit_log.h"
#include "keysvc/token_gateway.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/token_store.h"
#include "test_token.h"

namespace keysvc::test {

// Fixture for audit tests: one token gateway, logged in, on the test token for the suite,
// and a fresh folder per test under the token's folder, named `prefix` + test name.
class AuditTokenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestToken::get().clear();
    gateway_ = TokenGateway::open(TestToken::get().config()).release();
  }
  static void TearDownTestSuite() {
    delete gateway_;
    gateway_ = nullptr;
  }
  void make_dir(const std::string& prefix) {
    dir_ = TestToken::get().dir() + "/" + prefix + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  inline static TokenGateway* gateway_ = nullptr;
  std::string dir_;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void spit(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Lines without their '\n'.
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

inline std::string join_lines(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// 1-based number of the first line of `path` containing `needle` after line `after`.
inline std::size_t line_with(const std::string& path, const std::string& needle, std::size_t after = 0) {
  auto ls = lines_of(slurp(path));
  for (std::size_t k = after; k < ls.size(); ++k)
    if (ls[k].find(needle) != std::string::npos) return k + 1;
  return 0;
}

struct WrittenLog {
  std::vector<std::string> files;
  KeyName a{}, b{}, unknown{};
  // What the usage records said, summed per key name.
  std::map<KeyName, audit::UsageCounters> totals;
};

inline audit::UsageCounters counters(std::initializer_list<std::pair<audit::Outcome, std::uint64_t>> values) {
  audit::UsageCounters c{};
  for (auto [o, n] : values) c[static_cast<std::size_t>(o)] += n;
  return c;
}

// Config loaded, two generations created in the token (real custody), activations, three
// usage summaries, a seal in the middle, a revocation and destruction, an HSM error and a
// failed login; sealed at close. With `rotate`, continues in a second file after the
// second usage summary.
inline WrittenLog write_realistic_log(TokenGateway& gateway, const std::string& dir, bool rotate = false) {
  using audit::Outcome;
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  WrittenLog w;
  w.files.push_back(dir + "/audit.log");
  if (rotate) w.files.push_back(dir + "/audit.log.1");
  for (const auto& f : w.files) fs::remove(f);

  auto created = [&](const Schedule& s) {
    return gateway.call([&](hsm::Session& session) {
      Generation g = token_store::create_generation(session, s);
      auto c = token_store::read_custody(session, g);
      return audit::GenerationCreated{g.name, g.schedule, c.enc, c.mac};
    });
  };
  audit::AuditLog::Options o;
  o.host = "test-host";
  audit::AuditLog log(w.files[0], audit::token_sealer(gateway), o);
  auto usage = [&](std::int64_t start, std::map<KeyName, audit::UsageCounters> keys) {
    audit::UsageSummary s{start, start + 60000, keys};
    for (const auto& [n, c] : keys)
      for (std::size_t k = 0; k < audit::kOutcomeCount; ++k) w.totals[n][k] += c[k];
    log.append(s);
  };
  log.append_durable(audit::ConfigLoaded{"/etc/keysvc/keysvc.toml"});
  auto ga = created({1000, 1100, 4700, 11900});
  w.a = ga.name;
  w.unknown.fill(0xee);
  log.append_durable(ga);
  log.append_durable(audit::Activated{w.a});
  usage(1000000, {{w.a, counters({{Outcome::kIssued, 5}, {Outcome::kResumed, 3}, {Outcome::kRenewed, 1},
                                  {Outcome::kMacFailure, 1}})},
                  {w.unknown, counters({{Outcome::kUnknownKey, 2}})}});
  log.seal();
  auto gb = created({4000, 4700, 8300, 15500});
  w.b = gb.name;
  log.append_durable(gb);
  log.append_durable(audit::Activated{w.b});
  log.append_durable(audit::DecryptOnly{w.a});
  usage(1060000, {{w.a, counters({{Outcome::kResumed, 2}, {Outcome::kRenewed, 1}})},
                  {w.b, counters({{Outcome::kIssued, 4}, {Outcome::kResumed, 1}})}});
  if (rotate) log.rotate(w.files[1]);
  log.append_durable(audit::Revoked{w.a});
  usage(1120000, {{w.a, counters({{Outcome::kRevoked, 3}})}, {w.b, counters({{Outcome::kIssued, 2}})}});
  log.append_durable(audit::Destroyed{w.a});
  log.append_durable(audit::HsmError{"C_Sign", "CKR_DEVICE_ERROR"});
  log.append_durable(audit::LoginFailed{"keysvc-test", "CKR_PIN_INCORRECT"});
  log.close();
  return w;
}

}  // namespace keysvc::test
