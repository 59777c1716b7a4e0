// ngx_http_keysvc_module across nginx's own process lifecycle, workers running as
// www-data when the test runs as root:
//   - reload (SIGHUP, nginx -s reload): the master reads keysvc's TOML and PIN again,
//     the new workers open the token and resume the old workers' tickets;
//   - binary upgrade (SIGUSR2, SIGWINCH, SIGQUIT): a new master started from the binary
//     reads the configuration and PIN itself; its workers resume the old ones' tickets.
// Every test name contains "Nginx" (ctest -R Nginx).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "nginx_keysvc.h"
#include "test_token.h"
#include "ticket_scenarios.h"

namespace {

using namespace std::chrono_literals;
using namespace keysvc::test;

std::string ca() { return localhost_cert().cert; }

// nginx -s reload (SIGHUP): the master reads the configuration and PIN again and starts
// new workers; a ticket issued before resumes on them.
TEST(NginxModule, NginxReloadKeepsTicketsWorking) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(token_subdir("nginx"), keysvc_nginx(2, toml));
  tickets_survive_a_reload(nginx, SIGHUP, "reload");
}

// ---- binary upgrade ----

// nginx takes SIGUSR2 only when its master's parent is PID 1 (the new master must be
// able to outlive the old one), so this test runs nginx as a daemon (`daemon on`), as
// init systems do, and follows its masters through nginx.pid / nginx.pid.oldbin. Every
// nginx process it started (the daemon's session: masters old and new, their workers,
// orphans included) is killed when it ends, whatever happened.
class DaemonNginx {
 public:
  explicit DaemonNginx(std::string dir) : dir_(std::move(dir)) {}
  ~DaemonNginx() {
    if (session_ <= 1) return;
    for (pid_t p : session_pids(session_)) ::kill(p, SIGKILL);
  }
  // Called once the daemon has written its pid file.
  void remember_session() { session_ = ::getsid(master()); }
  DaemonNginx(const DaemonNginx&) = delete;
  DaemonNginx& operator=(const DaemonNginx&) = delete;

  static pid_t pid_in(const std::string& file) {
    const std::string text = read_file(file);
    return text.empty() ? 0 : static_cast<pid_t>(std::stol(text));
  }
  pid_t master() const { return pid_in(dir_ + "/nginx.pid"); }
  pid_t old_master() const { return pid_in(dir_ + "/nginx.pid.oldbin"); }
  std::string log() const { return read_file(dir_ + "/error.log"); }
  bool wait_for(const std::function<bool()>& done) const {
    for (int i = 0; i < 3000; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

 private:
  std::string dir_;
  pid_t session_ = -1;
};

std::size_t matches(const std::string& text, const std::string& pattern) {
  const std::regex re(pattern);
  return static_cast<std::size_t>(std::distance(std::sregex_iterator(text.begin(), text.end(), re), {}));
}

TEST(NginxModule, NginxBinaryUpgradeKeepsTicketsWorking) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  const std::string dir = token_subdir("nginx-upgrade");
  std::filesystem::create_directories(dir + "/tmp");
  const int port = free_port();
  const std::string conf = dir + "/nginx.conf";
  write_text_file(conf, std::regex_replace(NginxInstance::render(dir, keysvc_nginx(2, toml), port),
                                           std::regex("daemon off;"), "daemon on;"));
  DaemonNginx nginx(dir);
  RunResult started = run(server_command(kNginxBinary, {"-p", dir, "-c", conf}), "", 30s);
  ASSERT_EQ(started.exit_code, std::optional<int>(0)) << describe(started) << nginx.log();
  ASSERT_TRUE(nginx.wait_for([&] { return nginx.master() > 0; })) << nginx.log();
  nginx.remember_session();
  ASSERT_TRUE(nginx.wait_for([&] { return matches(nginx.log(), "keysvc: opened") == 2; })) << nginx.log();
  const pid_t old_master = nginx.master();
  const std::string before = dir + "/before.pem";
  ASSERT_TRUE(s_client_request(port, TlsVersion::kTls13, ca(), "", before).ok);

  ::kill(old_master, SIGUSR2);
  ASSERT_TRUE(nginx.wait_for([&] {
    return nginx.old_master() == old_master || nginx.log().find("changing binary signal is ignored") != std::string::npos;
  }));
  if (nginx.old_master() != old_master) {
    GTEST_SKIP() << "nginx ignored SIGUSR2: its daemon's parent is not PID 1 here (a subreaper adopted it)\n"
                 << nginx.log();
  }
  ASSERT_TRUE(nginx.wait_for([&] { return matches(nginx.log(), "keysvc: opened") == 4; })) << nginx.log();
  const pid_t new_master = nginx.master();
  ASSERT_NE(new_master, old_master);
  ::kill(old_master, SIGWINCH);  // the old master's workers finish and exit
  ASSERT_TRUE(nginx.wait_for([&] { return child_pids(old_master) == std::vector<pid_t>{new_master}; }))
      << nginx.log();

  int resumed = 0;
  const auto new_workers = child_pids(new_master);
  for (int i = 0; i < 4; ++i) {
    Answer a = s_client_request(port, TlsVersion::kTls13, ca(), before, before);
    EXPECT_TRUE(a.ok && a.reused) << a.detail;
    EXPECT_EQ(std::count(new_workers.begin(), new_workers.end(), a.pid), 1) << "not a new worker: " << a.pid;
    resumed += a.ok && a.reused;
  }
  print_figure("binary upgrade: " + std::to_string(resumed) + "/4 TLS 1.3 resumptions on the new master's workers");

  ::kill(old_master, SIGQUIT);
  ASSERT_TRUE(nginx.wait_for([&] { return nginx.old_master() == 0; })) << nginx.log();
  ::kill(new_master, SIGQUIT);
  ASSERT_TRUE(nginx.wait_for([&] { return nginx.master() == 0; })) << nginx.log();
  const std::string log = nginx.log();
  EXPECT_EQ(exit_counters(log).workers, 4u) << log;  // 2 old + 2 new workers
  EXPECT_EQ(log.find("stale global SSL error"), std::string::npos) << log;
  EXPECT_EQ(log.find(TestToken::get().pin()), std::string::npos);
}

}  // namespace
