// A token that cannot be read for longer than a refresh interval, under load, as an
// operator would see it: SoftHSM's token folder moved away for 4 s (refresh_interval 1 s)
// while two keysvc-tls-server processes serve s_client and a `keysvcctl rotate --every`
// rotator runs, then put back. A scan that sees no generation then is an outage, not a
// newer truth (ticket_rules.h): no generation may be reported destroyed, no audit record
// may claim so, the rotator must create nothing, and tickets must resume again within a
// few seconds of the restore, with no restart of anything.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "process.h"
#include "test_token.h"
#include "tls_server_process.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using keysvc::test::Process;
using keysvc::test::RunResult;
using keysvc::test::TestToken;
using keysvc::test::TlsServerProcess;
using keysvc::test::TlsVersion;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The test token's keysvc.toml with a 1 s refresh, one long generation, a fleet's
// settings (one rotator for all) and an audit file per process.
std::string write_config(const std::string& dir, const std::string& name, bool audit) {
  const std::string path = TestToken::get().dir() + "/" + name;  // next to the PIN file it names
  std::ofstream out(path);
  out << read_text(TestToken::get().config_path())
      << "\n[rotation]\nencrypt_period = \"1h\"\npublish_lead = \"5s\"\nrefresh_interval = \"1s\"\n"
         "clock_skew = \"1s\"\nself_rotate = false\n";
  if (audit) out << "[audit]\npath = \"" << dir << "/audit-{pid}.jsonl\"\nseal_interval = \"1s\"\n";
  return path;
}

bool resumes(int port, const std::string& sess_in) {
  RunResult r = keysvc::test::s_client(port, TlsVersion::kTls13, "-sess_in", sess_in);
  return r.exit_code == std::optional<int>(0) && r.out.find("Reused, TLSv1.3") != std::string::npos;
}

TEST(TokenOutage, AnUnreadableTokenIsAnOutageNotAnEmptyRingAndServersRecoverByThemselves) {
  TestToken& token = TestToken::get();
  token.clear();
  const std::string dir = token.dir() + "/outage";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string config = write_config(dir, "outage.toml", true);
  // The generation the servers will use, made before anyone audits.
  RunResult first =
      keysvc::test::run({KEYSVCCTL_BIN, "--config", write_config(dir, "setup.toml", false), "rotate"}, "", 30s);
  ASSERT_EQ(first.exit_code, std::optional<int>(0)) << keysvc::test::describe(first);

  TlsServerProcess a(KEYSVC_TLS_SERVER_BIN, {.config = config});
  TlsServerProcess b(KEYSVC_TLS_SERVER_BIN, {.config = config});
  Process rotator({KEYSVCCTL_BIN, "--config", config, "rotate", "--every", "1s"});
  const std::string before = dir + "/before.pem";
  RunResult issued = keysvc::test::s_client(a.port(), TlsVersion::kTls13, "-sess_out", before);
  ASSERT_EQ(issued.exit_code, std::optional<int>(0)) << keysvc::test::describe(issued);
  ASSERT_TRUE(resumes(b.port(), before)) << "tickets cross servers before the outage";
  // The rotator must have loaded its module and found the token before the outage (a
  // slow start, as under ThreadSanitizer, would otherwise meet the outage in C_Initialize
  // and test a rotator that never started).
  for (auto end = std::chrono::steady_clock::now() + 30s;
       rotator.out().find("rotating every") == std::string::npos && std::chrono::steady_clock::now() < end;)
    std::this_thread::sleep_for(50ms);
  ASSERT_NE(rotator.out().find("rotating every"), std::string::npos) << "the rotator did not start\n" << rotator.err();

  // The outage: SoftHSM finds no token folder (what an unreadable one looks like to it).
  const std::string tokens = token.dir() + "/tokens";
  fs::rename(tokens, tokens + ".away");
  int full_during = 0;
  for (auto end = std::chrono::steady_clock::now() + 4s; std::chrono::steady_clock::now() < end;) {
    RunResult r = keysvc::test::s_client(a.port(), TlsVersion::kTls13, "-sess_out", dir + "/during.pem");
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << "a handshake failed during the outage\n"
                                                  << keysvc::test::describe(r);
    if (r.exit_code == std::optional<int>(0)) ++full_during;
    std::this_thread::sleep_for(200ms);
  }
  fs::rename(tokens + ".away", tokens);

  // Back: the ticket from before resumes on both servers within a few seconds.
  const auto restored = std::chrono::steady_clock::now();
  bool back_a = false, back_b = false;
  while (!(back_a && back_b) && std::chrono::steady_clock::now() - restored < 10s) {
    back_a = back_a || resumes(a.port(), before);
    back_b = back_b || resumes(b.port(), before);
    if (!(back_a && back_b)) std::this_thread::sleep_for(200ms);
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - restored);
  EXPECT_TRUE(back_a && back_b) << "resumption not back within 10 s of the restore";
  // With epoch keys cached, tickets never stopped resuming; the servers must also read the
  // token again by themselves (a module restart where the module lost its view of it).
  for (TlsServerProcess* s : {&a, &b})
    EXPECT_TRUE(s->process().wait_for_stderr(std::regex("token scan good again"), std::chrono::seconds(10)))
        << "a server did not read the token again within 10 s of the restore\n" << s->process().err();
  const auto rescanned =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - restored);
  const std::string after = dir + "/after.pem";
  RunResult fresh = keysvc::test::s_client(b.port(), TlsVersion::kTls13, "-sess_out", after);
  ASSERT_EQ(fresh.exit_code, std::optional<int>(0)) << keysvc::test::describe(fresh);
  EXPECT_TRUE(resumes(a.port(), after)) << "a ticket issued after the outage does not cross servers";

  rotator.signal(SIGTERM);
  EXPECT_EQ(rotator.wait(10s), std::optional<int>(0)) << rotator.err();
  const std::string log_a = a.stop(), log_b = b.stop();
  std::cout << "[token-outage] 4 s outage: " << full_during << " handshakes served during it; tickets resumed "
            << took.count() << " ms after the restore; both servers scanned the token again within "
            << rescanned.count() << " ms\n";

  EXPECT_EQ(count(rotator.out(), "created "), 0u) << "the rotator created generations:\n" << rotator.out();
  EXPECT_NE(rotator.err().find("(retrying in 1s)"), std::string::npos) << "the rotator never saw the outage";
  for (const std::string* log : {&log_a, &log_b}) {
    EXPECT_EQ(count(*log, "token scan not used"), 1u) << "said once per outage\n" << *log;
    EXPECT_EQ(count(*log, "token scan good again"), 1u) << *log;
    EXPECT_EQ(count(*log, "HSM gone"), 1u) << "said once per outage\n" << *log;
    EXPECT_EQ(log->find("destroyed"), std::string::npos) << *log;
  }
  std::vector<std::string> audit_files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".jsonl") audit_files.push_back(e.path().string());
  ASSERT_EQ(audit_files.size(), 2u) << "the two servers' (keysvcctl changed nothing, so it wrote none)";
  for (const auto& f : audit_files) {
    const std::string text = read_text(f);
    EXPECT_EQ(count(text, "\"event\":\"destroyed\""), 0u) << f << "\n" << text;
    EXPECT_EQ(count(text, "\"event\":\"generation_created\""), 0u) << f << "\n" << text;
    RunResult v = keysvc::test::run({KEYSVCCTL_BIN, "--config", config, "audit", "verify", f}, "", 30s);
    EXPECT_EQ(v.exit_code, std::optional<int>(0)) << keysvc::test::describe(v);
  }
}

}  // namespace
