#include "apache_instance.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <sstream>

#include "worker_user.h"

namespace keysvc::test {

using namespace std::chrono_literals;

namespace {

// The request handler: the child's PID (from /proc/self/stat), mod_ssl's view of the
// session and the protocol, in the line tls_clients.h parses.
constexpr char kHandler[] = R"(function handle(r)
  r.content_type = "text/plain"
  local stat = io.open("/proc/self/stat")
  local pid = stat:read("*n")
  stat:close()
  local reused = (r:ssl_var_lookup("SSL_SESSION_RESUMED") == "Resumed") and "r" or "."
  r:puts(string.format("pid=%d reused=%s protocol=%s\n", pid, reused, r:ssl_var_lookup("SSL_PROTOCOL")))
  return apache2.OK
end
)";

// ListenCoresBucketsRatio: httpd makes (online cores / ratio) buckets.
unsigned bucket_ratio(int children) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const unsigned n = static_cast<unsigned>(std::max(1, children));
  return std::max(1u, (cores + n - 1) / n);
}

// In sanitizer builds: httpd's processes exit without destroying their configuration
// pool, so everything that lives as long as the configuration (httpd's regexes, mod_ssl's
// SSL_CTXs and, through them, the module's services and preloaded configurations) is
// still allocated at exit, mostly through uninstrumented libraries whose stacks ASan's
// unwinder cannot follow. Leak checking is off for httpd; every other ASan and UBSan
// check stays on (keysvc's own leaks are checked by the other suites).
std::vector<std::string> no_leak_check() {
  const char* options = std::getenv("ASAN_OPTIONS");
  return {std::string("ASAN_OPTIONS=") + (options ? options : "") + ":detect_leaks=0"};
}

}  // namespace

std::string ApacheInstance::render(const std::string& dir, const ApacheOptions& o, int port) {
  const std::string handler = dir + "/answer.lua";
  write_text_file(handler, kHandler);
  const int workers = o.children * o.threads;
  std::ostringstream c;
  c << "# written by keysvc's tests (tests/support/apache_instance.cc)\n"
    << "ServerRoot " << dir << "\nDefaultRuntimeDir " << dir << "\nPidFile " << dir << "/httpd.pid\n"
    << "ErrorLog " << dir << "/error.log\nLogLevel " << o.log_level << "\nMutex file:" << dir << " default\n";
  for (const char* m : {"mpm_event", "authz_core", "ssl", "lua"}) {
    c << "LoadModule " << m << "_module " << kApacheModules << "/mod_" << m << ".so\n";
  }
  if (!o.module.empty()) c << "LoadModule keysvc_module " << o.module << "\n";
  if (const auto& user = worker_user()) c << "User " << user->name << "\nGroup " << user->name << "\n";
  c << "ServerName localhost\n"
    << "StartServers " << o.children << "\nServerLimit " << o.children << "\nThreadsPerChild " << o.threads
    << "\nThreadLimit " << o.threads << "\nMaxRequestWorkers " << workers << "\nMinSpareThreads 1\n"
    << "MaxSpareThreads " << workers << "\nMaxConnectionsPerChild 0\nGracefulShutdownTimeout 5\n"
    // One listening socket per bucket of children (SO_REUSEPORT): the kernel spreads new
    // connections over the buckets, so successive connections of one client meet
    // different children. Never more buckets than children.
    << "ListenCoresBucketsRatio " << bucket_ratio(o.children) << "\n"
    << "Listen 127.0.0.1:" << port << "\n"
    << o.main << "\n"
    << "<VirtualHost 127.0.0.1:" << port << ">\n"
    << "    ServerName localhost\n    SSLEngine on\n"
    << "    SSLCertificateFile " << o.cert << "\n    SSLCertificateKeyFile " << o.key << "\n"
    << "    SSLProtocol -all +TLSv1.2 +TLSv1.3\n"
    << "    LuaMapHandler ^/ " << handler << " handle\n"
    << o.vhost << "\n"
    << "</VirtualHost>\n";
  return c.str();
}

ApacheInstance::ApacheInstance(std::string dir, ApacheOptions options) : PreforkServer(std::move(dir), "error.log", "children") {
  launch([&](int port) {
    return Launch{server_command(kApacheBinary, {"-d", this->dir(), "-f", conf_path(), "-DFOREGROUND"}, no_leak_check()),
                  conf_path(),
                  render(this->dir(), options, port), static_cast<std::size_t>(options.children), SIGTERM};
  });
}

RunResult ApacheInstance::test_config(const std::string& dir, const std::string& file, const std::string& conf_text) {
  const std::string abs = std::filesystem::absolute(dir).string();
  std::filesystem::create_directories(abs);
  const std::string path = abs + "/" + file;
  write_text_file(path, conf_text);
  return run(server_command(kApacheBinary, {"-t", "-d", abs, "-f", path}, no_leak_check()), "", 30s);
}

}  // namespace keysvc::test
