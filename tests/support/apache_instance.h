// A real Apache httpd (Debian's /usr/sbin/apache2, event MPM) for tests: its own
// ServerRoot and configuration in a private folder, mod_ssl and mod_keysvc loaded, one
// TLS virtual host on a free port of 127.0.0.1; started in the foreground
// (-DFOREGROUND) and stopped with SIGTERM (prefork_server.h). The system instance and
// /etc/apache2 are never used.
//
//   ApacheOptions o;
//   o.children = 3;
//   o.module = mod_keysvc_so;
//   o.main = "KeysvcConfig " + toml + "\n";
//   o.vhost = "KeysvcTickets on\n";
//   o.cert = cert.cert; o.key = cert.key;
//   ApacheInstance httpd(dir, o);
//   ... https://127.0.0.1:httpd.port()/ answers "pid=... reused=r|. protocol=TLSv1.3"
//       (tls_clients.h), from a mod_lua handler
//   EXPECT_EQ(httpd.stop(), 0);
//
// When the test runs as root, the children run as the worker user (www-data,
// worker_user.h), as Debian's apache2 does; httpd refuses to serve as root anyway.
#pragma once

#include <string>

#include "prefork_server.h"
#include "tls_clients.h"

namespace keysvc::test {

inline constexpr char kApacheBinary[] = "/usr/sbin/apache2";
inline constexpr char kApacheModules[] = "/usr/lib/apache2/modules";

struct ApacheOptions {
  // Child processes (StartServers = ServerLimit: never more, never fewer) and threads
  // in each.
  int children = 2;
  int threads = 4;
  // mod_keysvc.so to load ("" for none).
  std::string module;
  // Extra text for the main server configuration and the TLS <VirtualHost>.
  std::string main;
  std::string vhost;
  // SSLCertificateFile / SSLCertificateKeyFile.
  std::string cert;
  std::string key;
  std::string log_level = "notice";
};

class ApacheInstance : public PreforkServer {
 public:
  // Writes `dir`/httpd.conf and the request handler (dir is created) and starts httpd.
  // Returns once it accepts connections and runs options.children children. Throws
  // std::runtime_error (with the error log) if it does not start.
  ApacheInstance(std::string dir, ApacheOptions options);

  std::string conf_path() const { return dir() + "/httpd.conf"; }

  // `apache2 -t` (what `apachectl configtest` runs) on a configuration text written to
  // `dir`/FILE: exit code and output.
  static RunResult test_config(const std::string& dir, const std::string& file, const std::string& conf_text);

  // The configuration text ApacheInstance writes for `options` listening on `port` with
  // ServerRoot `dir` (for tests of configurations httpd should refuse). Writes the
  // request handler into `dir` too.
  static std::string render(const std::string& dir, const ApacheOptions& options, int port);
};

}  // namespace keysvc::test
