// A real nginx (/usr/sbin/nginx) for tests: its configuration written from a template
// into a private prefix folder, started in the foreground (daemon off) under
// keysvc::test::Process, waited for until it accepts connections on 127.0.0.1 and all
// its workers run, and stopped (SIGQUIT, then SIGKILL for master and workers) when
// destroyed.
//
//   NginxOptions o;
//   o.workers = 4;
//   o.load_modules = {module_so};
//   o.http = "keysvc_config " + toml + ";\nkeysvc_tickets on;\n";
//   o.cert = cert.cert_path; o.key = cert.key_path;
//   NginxInstance nginx(dir, o);
//   ... https://127.0.0.1:nginx.port()/ answers "pid=... reused=r|. protocol=TLSv1.3"
//   EXPECT_EQ(nginx.stop(), 0);
//   std::string log = nginx.error_log();
//
// Everything nginx writes (error.log, access.log, pid, temp folders) stays in the
// prefix folder; nothing under /etc/nginx or /var is used. When the test runs as root,
// the workers run as root too (`user root;`) so they can read the test token.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "process.h"

namespace keysvc::test {

inline constexpr char kNginxBinary[] = "/usr/sbin/nginx";

struct NginxOptions {
  int workers = 1;
  // Absolute paths of dynamic modules (load_module lines, first in the file).
  std::vector<std::string> load_modules;
  // Names of environment variables the workers keep (nginx's `env NAME;`; nginx clears
  // everything else). SOFTHSM2_CONF is always kept.
  std::vector<std::string> env;
  // Extra text for the main context, the http block and the TLS server block.
  std::string main;
  std::string http;
  std::string server;
  // ssl_certificate / ssl_certificate_key values (files, or e.g. "engine:pkcs11:...").
  std::string cert;
  std::string key;
  // `listen ... reuseport`: each worker has its own socket and the kernel spreads new
  // connections over the workers by their address hash, so successive connections of
  // one client meet different workers.
  bool reuseport = true;
  // error_log level.
  std::string log_level = "notice";
};

// The body every request to the TLS server gets: which worker answered, whether the
// TLS session was resumed ("r") or not ("."), and the protocol.
//   pid=1234 reused=r protocol=TLSv1.3
inline constexpr char kNginxBodyPattern[] = R"(pid=(\d+) reused=([r.]) protocol=(TLSv1\.[23]))";

class NginxInstance {
 public:
  // Writes `dir`/nginx.conf (dir is created) and starts nginx on a free port of
  // 127.0.0.1. Returns once nginx accepts connections and runs options.workers workers.
  // Throws std::runtime_error (with the error log) if it does not start.
  NginxInstance(std::string dir, NginxOptions options);
  ~NginxInstance();
  NginxInstance(const NginxInstance&) = delete;
  NginxInstance& operator=(const NginxInstance&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  std::string conf_path() const { return dir_ + "/nginx.conf"; }
  std::string error_log_path() const { return dir_ + "/error.log"; }
  pid_t master_pid() const;
  // The master's current worker processes.
  std::vector<pid_t> worker_pids() const;

  // The error log so far (nginx's stderr ends up there too once it has read its
  // configuration).
  std::string error_log() const;
  // The first line of a sanitizer report (ASan, LSan, UBSan) in the error log, "" if
  // none. A worker that hits one exits and the master starts another, so the report in
  // the log (nginx's stderr) is the only trace of it.
  std::string sanitizer_report() const;
  // Waits until the error log has at least `count` matches of `pattern`. False on timeout.
  bool wait_for_log(const std::regex& pattern, std::size_t count, std::chrono::milliseconds timeout) const;

  // Graceful stop (SIGQUIT: workers finish their connections and run their exit hooks).
  // Returns nginx's exit code, or std::nullopt if it had to be killed.
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  bool running() const;

  // `nginx -t` on a configuration text (written to `dir`/FILE): exit code and output.
  static RunResult test_config(const std::string& dir, const std::string& file, const std::string& conf_text);

  // The configuration text NginxInstance writes for `options` listening on `port`
  // with prefix `dir` (for tests of configurations nginx should refuse).
  static std::string render(const std::string& dir, const NginxOptions& options, int port);

 private:
  void start();
  void kill_all();

  std::string dir_;
  NginxOptions options_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
  std::vector<pid_t> last_workers_;
};

// A free TCP port on 127.0.0.1 (bound and released; another process could take it
// before the caller binds it).
int free_port();

// Children of `parent` (from /proc).
std::vector<pid_t> child_pids(pid_t parent);

// True if /proc/PID/maps of `pid` maps a file whose path contains `needle`.
bool maps_file(pid_t pid, const std::string& needle);

}  // namespace keysvc::test
