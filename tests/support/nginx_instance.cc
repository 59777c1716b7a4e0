#include "nginx_instance.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace keysvc::test {

using namespace std::chrono_literals;

namespace {

constexpr auto kStartTimeout = 30s;
constexpr auto kKillTimeout = 10s;
constexpr int kStartAttempts = 3;  // free_port() can race with another process

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::size_t count_matches(const std::string& text, const std::regex& pattern) {
  return static_cast<std::size_t>(
      std::distance(std::sregex_iterator(text.begin(), text.end(), pattern), std::sregex_iterator()));
}

// nginx's command line. In an ASan build the module needs ASan's runtime, which must be
// the process's first library (it replaces malloc), and libstdc++ loaded before ASan
// starts (adapters/nginx/CMakeLists.txt): env(1) starts the uninstrumented nginx with
// both in LD_PRELOAD, and the workers inherit them by fork. Only nginx gets them, never
// the clients the tests run.
std::vector<std::string> nginx_command(std::vector<std::string> args) {
  std::vector<std::string> argv;
  if (const std::string preload = KEYSVC_NGINX_PRELOAD; !preload.empty()) {
    argv = {"/usr/bin/env", "LD_PRELOAD=" + preload};
  }
  argv.push_back(kNginxBinary);
  argv.insert(argv.end(), std::make_move_iterator(args.begin()), std::make_move_iterator(args.end()));
  return argv;
}

}  // namespace

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("free_port: " + why);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::vector<pid_t> child_pids(pid_t parent) {
  std::vector<pid_t> children;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    // /proc/PID/stat: "pid (comm) state ppid ...", comm may contain spaces or ')'.
    const std::string stat = read_text(entry.path().string() + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    long ppid = 0;
    if (rest >> state >> ppid && ppid == parent) children.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return children;
}

bool maps_file(pid_t pid, const std::string& needle) {
  return read_text("/proc/" + std::to_string(pid) + "/maps").find(needle) != std::string::npos;
}

std::string NginxInstance::render(const std::string& dir, const NginxOptions& o, int port) {
  std::ostringstream c;
  c << "# written by keysvc's tests (tests/support/nginx_instance.cc)\n";
  for (const auto& m : o.load_modules) c << "load_module " << m << ";\n";
  c << "daemon off;\nmaster_process on;\nworker_processes " << o.workers << ";\n"
    << "pid " << dir << "/nginx.pid;\nlock_file " << dir << "/nginx.lock;\n"
    << "error_log " << dir << "/error.log " << o.log_level << ";\n"
    << "worker_shutdown_timeout 5s;\n";
  if (::geteuid() == 0) c << "user root root;\n";
  c << "env SOFTHSM2_CONF;\n";
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

NginxInstance::NginxInstance(std::string dir, NginxOptions options)
    : dir_(std::filesystem::absolute(dir).string()), options_(std::move(options)) {
  std::filesystem::create_directories(dir_ + "/tmp");
  for (int attempt = 1;; ++attempt) {
    try {
      start();
      return;
    } catch (const std::runtime_error&) {
      kill_all();
      const bool port_taken = error_log().find("Address already in use") != std::string::npos;
      if (!port_taken || attempt == kStartAttempts) throw;
    }
  }
}

void NginxInstance::start() {
  port_ = free_port();
  std::filesystem::remove(error_log_path());
  write_text(conf_path(), render(dir_, options_, port_));
  process_ = std::make_unique<Process>(nginx_command({"-p", dir_, "-c", conf_path()}));

  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  for (;;) {
    if (process_->poll()) {
      throw std::runtime_error("nginx exited while starting: " + process_->command_line() + "\n--- stderr\n" +
                               process_->err() + "\n--- error.log\n" + error_log());
    }
    if (accepts(port_) && worker_pids().size() == static_cast<std::size_t>(options_.workers)) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("nginx did not start within 30 s\n--- error.log\n" + error_log());
    }
    std::this_thread::sleep_for(10ms);
  }
  last_workers_ = worker_pids();
}

NginxInstance::~NginxInstance() {
  if (running()) stop(kKillTimeout);
  kill_all();
}

pid_t NginxInstance::master_pid() const { return process_ ? process_->pid() : -1; }

std::vector<pid_t> NginxInstance::worker_pids() const {
  return process_ ? child_pids(process_->pid()) : std::vector<pid_t>{};
}

bool NginxInstance::running() const { return process_ && !process_->poll(); }

std::string NginxInstance::error_log() const { return read_text(error_log_path()); }

std::string NginxInstance::sanitizer_report() const {
  static const std::regex report(R"([^\n]*(ERROR: [A-Za-z]+Sanitizer|Sanitizer: CHECK failed|runtime error:)[^\n]*)");
  const std::string log = error_log();
  std::smatch m;
  return std::regex_search(log, m, report) ? m.str(0) : std::string();
}

bool NginxInstance::wait_for_log(const std::regex& pattern, std::size_t count,
                                 std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (count_matches(error_log(), pattern) >= count) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

std::optional<int> NginxInstance::stop(std::chrono::milliseconds timeout) {
  if (!process_) return std::nullopt;
  if (auto code = process_->poll()) return code;
  const auto workers = worker_pids();
  if (!workers.empty()) last_workers_ = workers;
  process_->signal(SIGQUIT);
  auto code = process_->wait(timeout);
  if (code) {
    last_workers_.clear();  // the master reaps its workers before it exits
  } else {
    kill_all();
  }
  return code;
}

// The master first, so it does not start new workers, then every worker it had.
void NginxInstance::kill_all() {
  if (!process_) return;
  for (pid_t w : worker_pids()) last_workers_.push_back(w);
  process_->signal(SIGKILL);
  process_->wait(kKillTimeout);
  for (pid_t w : last_workers_) ::kill(w, SIGKILL);
  last_workers_.clear();
}

RunResult NginxInstance::test_config(const std::string& dir, const std::string& file, const std::string& conf_text) {
  std::filesystem::create_directories(dir + "/tmp");
  const std::string path = std::filesystem::absolute(dir).string() + "/" + file;
  write_text(path, conf_text);
  return run(nginx_command({"-t", "-p", std::filesystem::absolute(dir).string(), "-c", path}), "", 30s);
}

}  // namespace keysvc::test
