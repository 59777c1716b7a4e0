// A real nginx (/usr/sbin/nginx) for tests: its configuration written from a template
// into a private prefix folder, started in the foreground (daemon off) and stopped with
// SIGQUIT (prefork_server.h).
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
// the workers run as the worker user (`user www-data;`, worker_user.h), as Debian's
// nginx.conf has it: the master reads keysvc's configuration and PIN, the workers open
// the token.
#pragma once

#include <string>
#include <vector>

#include "prefork_server.h"
#include "tls_clients.h"

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

class NginxInstance : public PreforkServer {
 public:
  // Writes `dir`/nginx.conf (dir is created) and starts nginx on a free port of
  // 127.0.0.1. Returns once nginx accepts connections and runs options.workers workers.
  // Throws std::runtime_error (with the error log) if it does not start.
  NginxInstance(std::string dir, NginxOptions options);

  std::string conf_path() const { return dir() + "/nginx.conf"; }

  // `nginx -t` on a configuration text (written to `dir`/FILE): exit code and output.
  static RunResult test_config(const std::string& dir, const std::string& file, const std::string& conf_text);

  // The configuration text NginxInstance writes for `options` listening on `port`
  // with prefix `dir` (for tests of configurations nginx should refuse).
  static std::string render(const std::string& dir, const NginxOptions& options, int port);
};

}  // namespace keysvc::test
