#include "audit_scenario.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "keysvc/audit_verify.h"
#include "test_token.h"

namespace keysvc::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::int64_t audit_time_ms(const std::string& iso) { return keysvc::audit::parse_time(iso).value_or(0); }

AuditScenario::AuditScenario(const std::string& name, std::string keysvcctl_bin, std::string server_bin,
                             Options options)
    : keysvcctl_(std::move(keysvcctl_bin)), server_bin_(std::move(server_bin)) {
  TestToken::get().clear();
  const char* tmp = std::getenv("KEYSVC_TEST_TMPDIR");
  dir_ = std::string(tmp ? tmp : "/tmp") + "/logs/" + name;
  fs::remove_all(dir_);
  fs::create_directories(dir_ + "/sessions");
  server_log_ = dir_ + "/audit.jsonl";
  ctl_log_ = dir_ + "/audit-keysvcctl.jsonl";
  // Next to the token's pin file: the config's "file:pin" is relative to its folder.
  config_ = TestToken::get().dir() + "/keysvc-" + fs::path(name).filename().string() + ".toml";
  std::string base = read_file(TestToken::get().config_path());
  if (options.session_copies) base.replace(base.find("[hsm]\n"), 6, "[hsm]\nsession_copies = true\n");
  std::ofstream(config_) << base << "\n[rotation]\nrefresh_interval = \"1h\"\npublish_lead = \"2h\"\n"
                         << "self_rotate = false\ncopyable_keys = " << (options.session_copies ? "true" : "false")
                         << "\n\n[audit]\npath = \"" << server_log_ << "\"\nsummary_interval = \""
                         << options.summary_interval << "\"\nseal_interval = \"" << options.seal_interval << "\"\n";
}

RunResult AuditScenario::ctl(std::vector<std::string> args, bool with_config) const {
  if (with_config) args.insert(args.begin(), {"--config", config_});
  args.insert(args.begin(), keysvcctl_);
  return run(args, "", 60s);
}

std::string AuditScenario::generate() const {
  RunResult r = ctl({"keys", "generate"});
  EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  return r.exit_code == 0 && r.out.size() >= 32 ? r.out.substr(0, 32) : std::string();
}

std::string AuditScenario::generate_successor() const {
  std::int64_t latest = 0;
  for (const Json& r : records(ctl_log_))
    if (r.value("event", "") == "generation_created")
      latest = std::max(latest, r.value("encrypt_from", std::int64_t{0}));
  while (std::chrono::system_clock::now() < std::chrono::system_clock::time_point(std::chrono::seconds(latest + 1)))
    std::this_thread::sleep_for(50ms);
  return generate();
}

std::unique_ptr<TlsServerProcess> AuditScenario::start_server() const {
  return std::make_unique<TlsServerProcess>(server_bin_, TlsServerProcess::Options{.config = config_});
}

std::vector<std::string> AuditScenario::full_handshakes(int port, int n, const std::string& tag) const {
  std::vector<std::string> files;
  for (int k = 0; k < n; ++k) {
    files.push_back(dir_ + "/sessions/" + tag + "-" + std::to_string(sessions_++) + ".pem");
    RunResult r = s_client(port, TlsVersion::kTls13, "-sess_out", files.back());
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    EXPECT_NE(r.out.find("New, TLSv1.3"), std::string::npos) << describe(r);
  }
  return files;
}

std::vector<AuditScenario::Json> AuditScenario::records(const std::string& file) {
  std::vector<Json> out;
  std::istringstream in(read_file(file));
  for (std::string line; std::getline(in, line);) {
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

std::optional<std::int64_t> AuditScenario::event_time(const std::string& file, const std::string& event,
                                                      const std::string& name) {
  for (const Json& r : records(file))
    if (r.value("event", "") == event && r.value("name", "") == name) return audit_time_ms(r.value("ts", ""));
  return std::nullopt;
}

std::int64_t AuditScenario::period_start(const Json& usage) { return audit_time_ms(usage.value("period_start", "")); }

std::uint64_t AuditScenario::count(const Json& usage, const std::string& name, const std::string& outcome) {
  const Json* keys = usage.contains("keys") ? &usage["keys"] : nullptr;
  if (!keys || !keys->contains(name) || !(*keys)[name].contains(outcome)) return 0;
  return (*keys)[name][outcome].get<std::uint64_t>();
}

bool AuditScenario::wait_for_usage(int port, const std::function<bool(const Json&)>& done, int limit) const {
  for (int k = 0; k < limit; ++k) {
    for (const Json& r : records(server_log_))
      if (r.value("event", "") == "usage" && done(r)) return true;
    full_handshakes(port, 1, "wait");
    std::this_thread::sleep_for(100ms);  // summary_interval is 1 s: a few handshakes per record
  }
  return false;
}

bool AuditScenario::wait_for_issued_after(int port, const std::string& name, std::int64_t t) const {
  return wait_for_usage(port, [&](const Json& u) { return period_start(u) > t && count(u, name, "issued") > 0; });
}

}  // namespace keysvc::test
