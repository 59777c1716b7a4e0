#include "prefork_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
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

}  // namespace

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::vector<std::string> server_command(const std::string& binary, std::vector<std::string> args,
                                        const std::vector<std::string>& sanitizer_env) {
  std::vector<std::string> argv;
  if (const std::string preload = KEYSVC_NGINX_PRELOAD; !preload.empty()) {
    argv = {"/usr/bin/env", "LD_PRELOAD=" + preload};
    argv.insert(argv.end(), sanitizer_env.begin(), sanitizer_env.end());
  }
  argv.push_back(binary);
  argv.insert(argv.end(), std::make_move_iterator(args.begin()), std::make_move_iterator(args.end()));
  return argv;
}

bool servers_use_sanitizer_preload() { return !std::string(KEYSVC_NGINX_PRELOAD).empty(); }

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

namespace {

// Every live process whose /proc/PID/stat ("pid (comm) state ppid pgrp session ...", comm
// may contain spaces or ')') satisfies `wanted(ppid, session)`.
std::vector<pid_t> processes_where(const std::function<bool(long ppid, long session)>& wanted) {
  std::vector<pid_t> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_text(entry.path().string() + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    long ppid = 0, pgrp = 0, session = 0;
    if (rest >> state >> ppid >> pgrp >> session && state != 'Z' && wanted(ppid, session)) {
      found.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return found;
}

}  // namespace

std::vector<pid_t> child_pids(pid_t parent) {
  return processes_where([parent](long ppid, long) { return ppid == parent; });
}

std::vector<pid_t> session_pids(pid_t sid) {
  return processes_where([sid](long, long session) { return session == sid; });
}

bool maps_file(pid_t pid, const std::string& needle) {
  return read_text("/proc/" + std::to_string(pid) + "/maps").find(needle) != std::string::npos;
}

long process_uid(pid_t pid) {
  std::istringstream status(read_text("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Uid:", 0) == 0) return std::stol(line.substr(4));
  }
  return -1;
}

PreforkServer::PreforkServer(std::string dir, const std::string& error_log_file, std::string worker_noun)
    : dir_(std::filesystem::absolute(dir).string()),
      error_log_path_(dir_ + "/" + error_log_file),
      worker_noun_(std::move(worker_noun)) {
  std::filesystem::create_directories(dir_);
}

void PreforkServer::launch(const std::function<Launch(int port)>& make) {
  for (int attempt = 1;; ++attempt) {
    try {
      port_ = free_port();
      start(make(port_));
      return;
    } catch (const std::runtime_error&) {
      kill_all();
      const bool port_taken = error_log().find("Address already in use") != std::string::npos;
      if (!port_taken || attempt == kStartAttempts) throw;
    }
  }
}

void PreforkServer::start(const Launch& launch) {
  std::filesystem::remove(error_log_path_);
  write_text_file(launch.config_path, launch.config_text);
  stop_signal_ = launch.stop_signal;
  workers_ = launch.workers;
  process_ = std::make_unique<Process>(launch.argv);

  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  for (;;) {
    if (process_->poll()) {
      throw std::runtime_error("server exited while starting: " + process_->command_line() + "\n--- stderr\n" +
                               process_->err() + "\n--- error log\n" + error_log());
    }
    if (accepts(port_) && worker_pids().size() == workers_) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("server did not start within 30 s\n--- error log\n" + error_log());
    }
    std::this_thread::sleep_for(10ms);
  }
  last_workers_ = worker_pids();
}

PreforkServer::~PreforkServer() {
  if (running()) stop(kKillTimeout);
  kill_all();
}

pid_t PreforkServer::master_pid() const { return process_ ? process_->pid() : -1; }

std::vector<pid_t> PreforkServer::worker_pids() const {
  return process_ ? child_pids(process_->pid()) : std::vector<pid_t>{};
}

bool PreforkServer::running() const { return process_ && !process_->poll(); }

std::string PreforkServer::error_log() const { return read_text(error_log_path_); }

std::string PreforkServer::sanitizer_report() const {
  static const std::regex report(R"([^\n]*(ERROR: [A-Za-z]+Sanitizer|Sanitizer: CHECK failed|runtime error:)[^\n]*)");
  const std::string log = error_log();
  std::smatch m;
  return std::regex_search(log, m, report) ? m.str(0) : std::string();
}

bool PreforkServer::wait_for_log(const std::regex& pattern, std::size_t count, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (count_matches(error_log(), pattern) >= count) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

bool PreforkServer::wait_for_new_workers(const std::vector<pid_t>& old, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto now = worker_pids();
    const bool replaced = now.size() == old.size() && std::none_of(now.begin(), now.end(), [&](pid_t p) {
                            return std::find(old.begin(), old.end(), p) != old.end();
                          });
    if (replaced) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

std::optional<int> PreforkServer::stop(std::chrono::milliseconds timeout) {
  if (!process_) return std::nullopt;
  if (auto code = process_->poll()) return code;
  const auto workers = worker_pids();
  if (!workers.empty()) last_workers_ = workers;
  process_->signal(stop_signal_);
  auto code = process_->wait(timeout);
  if (code) {
    last_workers_.clear();  // the master reaps its workers before it exits
  } else {
    kill_all();
  }
  return code;
}

// The master first, so it does not start new workers, then every worker it had.
void PreforkServer::kill_all() {
  if (!process_) return;
  for (pid_t w : worker_pids()) last_workers_.push_back(w);
  process_->signal(SIGKILL);
  process_->wait(kKillTimeout);
  for (pid_t w : last_workers_) ::kill(w, SIGKILL);
  last_workers_.clear();
}

}  // namespace keysvc::test
