#include "nginx_instance.h"

#include <signal.h>

#include <filesystem>
#include <sstream>

#include "worker_user.h"

namespace keysvc::test {

using namespace std::chrono_literals;

std::string NginxInstance::render(const std::string& dir, const NginxOptions& o, int port) {
  std::ostringstream c;
  c << "# written by keysvc's tests (tests/support/nginx_instance.cc)\n";
  for (const auto& m : o.load_modules) c << "load_module " << m << ";\n";
  c << "daemon off;\nmaster_process on;\nworker_processes " << o.workers << ";\n"
    << "pid " << dir << "/nginx.pid;\nlock_file " << dir << "/nginx.lock;\n"
    << "error_log " << dir << "/error.log " << o.log_level << ";\n"
    << "worker_shutdown_timeout 5s;\n";
  if (const auto& user = worker_user()) c << "user " << user->name << ";\n";
  c << "env SOFTHSM2_CONF;\n";
  // A binary upgrade execs a new master with only the `env` variables: in a sanitizer
  // build it needs the preloaded runtime and its options too.
  if (servers_use_sanitizer_preload()) {
    for (const char* e : {"LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"}) c << "env " << e << ";\n";
  }
  for (const auto& e : o.env) c << "env " << e << ";\n";
  c << o.main << "\n"
    << "events {\n    worker_connections 256;\n}\n"
    << "http {\n"
    << "    access_log " << dir << "/access.log;\n";
  for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
    c << "    " << t << "_temp_path " << dir << "/tmp/" << t << ";\n";
  c << "    default_type text/plain;\n" << o.http << "\n"
    << "    server {\n"
    << "        listen 127.0.0.1:" << port << " ssl" << (o.reuseport ? " reuseport" : "") << ";\n"
    << "        server_name localhost;\n"
    << "        ssl_certificate " << o.cert << ";\n"
    << "        ssl_certificate_key " << o.key << ";\n"
    // nginx 1.22's default is TLSv1 TLSv1.1 TLSv1.2: no TLS 1.3 unless asked for.
    << "        ssl_protocols TLSv1.2 TLSv1.3;\n"
    << o.server << "\n"
    << "        location / {\n"
    << "            return 200 \"pid=$pid reused=$ssl_session_reused protocol=$ssl_protocol\\n\";\n"
    << "        }\n"
    << "    }\n"
    << "}\n";
  return c.str();
}

NginxInstance::NginxInstance(std::string dir, NginxOptions options) : PreforkServer(std::move(dir), "error.log", "workers") {
  std::filesystem::create_directories(this->dir() + "/tmp");
  launch([&](int port) {
    return Launch{server_command(kNginxBinary, {"-p", this->dir(), "-c", conf_path()}), conf_path(),
                  render(this->dir(), options, port), static_cast<std::size_t>(options.workers), SIGQUIT};
  });
}

RunResult NginxInstance::test_config(const std::string& dir, const std::string& file, const std::string& conf_text) {
  std::filesystem::create_directories(dir + "/tmp");
  const std::string path = std::filesystem::absolute(dir).string() + "/" + file;
  write_text_file(path, conf_text);
  return run(server_command(kNginxBinary, {"-t", "-p", std::filesystem::absolute(dir).string(), "-c", path}), "", 30s);
}

}  // namespace keysvc::test
