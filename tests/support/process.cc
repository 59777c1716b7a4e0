#include "process.h"

#include "keysvc/hsm/secret.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace keysvc::test {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

namespace {

using namespace std::chrono_literals;

std::string make_temp_dir() {
  const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
  std::string root = base && *base ? base : "/tmp";
  std::filesystem::create_directories(root);
  std::string tmpl = root + "/keysvc-proc-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed in " + root);
  return tmpl;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// RAII for posix_spawn_file_actions_t.
struct FileActions {
  posix_spawn_file_actions_t actions;
  FileActions() {
    if (posix_spawn_file_actions_init(&actions) != 0) throw std::runtime_error("posix_spawn_file_actions_init");
  }
  ~FileActions() { posix_spawn_file_actions_destroy(&actions); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  void open(int fd, const std::string& path, int flags) {
    if (int rc = posix_spawn_file_actions_addopen(&actions, fd, path.c_str(), flags, 0600); rc != 0)
      throw std::runtime_error("posix_spawn_file_actions_addopen: " + std::string(std::strerror(rc)));
  }
};

// RAII for posix_spawnattr_t: default signal mask and dispositions in the child, so a
// test runner that blocks or ignores signals does not leak that into servers.
struct SpawnAttr {
  posix_spawnattr_t attr;
  SpawnAttr() {
    if (posix_spawnattr_init(&attr) != 0) throw std::runtime_error("posix_spawnattr_init");
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  ~SpawnAttr() { posix_spawnattr_destroy(&attr); }
  SpawnAttr(const SpawnAttr&) = delete;
  SpawnAttr& operator=(const SpawnAttr&) = delete;
};

// This process's environment with `extra` ("NAME=VALUE") added, replacing equal names.
std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const auto& x : extra) replaced = replaced || x.compare(0, name.size(), name) == 0;
    if (!replaced) env.push_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

}  // namespace

Process::Process(std::vector<std::string> argv, const std::string& stdin_data,
                 const std::vector<std::string>& extra_env)
    : argv_(std::move(argv)) {
  if (argv_.empty()) throw std::invalid_argument("Process: empty argv");
  dir_ = make_temp_dir();
  {
    std::ofstream in(dir_ + "/stdin", std::ios::binary);
    in << stdin_data;
    if (!in) throw std::runtime_error("cannot write " + dir_ + "/stdin");
  }
  FileActions fa;
  fa.open(STDIN_FILENO, dir_ + "/stdin", O_RDONLY);
  fa.open(STDOUT_FILENO, dir_ + "/stdout", O_WRONLY | O_CREAT | O_TRUNC);
  fa.open(STDERR_FILENO, dir_ + "/stderr", O_WRONLY | O_CREAT | O_TRUNC);
  SpawnAttr sa;

  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env = environment_with(extra_env);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int rc = posix_spawnp(&pid_, args[0], &fa.actions, &sa.attr, args.data(), extra_env.empty() ? environ : envp.data());
  for (auto& e : env) hsm::wipe(e);
  if (rc != 0) {
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("cannot start " + argv_[0] + ": " + std::strerror(rc));
  }
}

Process::~Process() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  keep_output();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void Process::signal(int sig) {
  if (!status_) ::kill(pid_, sig);
}

std::optional<int> Process::poll() {
  if (status_) return status_;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) status_ = decode_status(status);
  return status_;
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto s = poll()) return s;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
}

int wait_for_child(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) != pid) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(5ms);
  }
  return decode_status(status);
}

void Process::keep_output() const noexcept {
  // For the suite-wide secret scan (tools/scan_logs_for_secrets.py): every child's output
  // stays under $KEYSVC_TEST_TMPDIR/logs/processes, named after its temporary folder.
  const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
  if (base == nullptr || *base == '\0') return;
  std::error_code ec;
  std::string dir = std::string(base) + "/logs/processes";
  std::filesystem::create_directories(dir, ec);
  std::string stem = dir + "/" + std::filesystem::path(dir_).filename().string() + "-" +
                     std::filesystem::path(argv_.empty() ? "" : argv_[0]).filename().string();
  std::filesystem::copy_file(dir_ + "/stdout", stem + ".stdout", std::filesystem::copy_options::overwrite_existing, ec);
  std::filesystem::copy_file(dir_ + "/stderr", stem + ".stderr", std::filesystem::copy_options::overwrite_existing, ec);
}

std::string Process::out() const { return read_file(dir_ + "/stdout"); }
std::string Process::err() const { return read_file(dir_ + "/stderr"); }

std::optional<std::vector<std::string>> Process::wait_for_stderr(const std::regex& pattern,
                                                                 std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const bool ended = poll().has_value();  // read after checking, so output is complete
    const std::string text = err();
    std::smatch m;
    if (std::regex_search(text, m, pattern)) return std::vector<std::string>(m.begin(), m.end());
    if (ended || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

std::string Process::command_line() const {
  std::string s;
  for (const auto& a : argv_) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

RunResult run(std::vector<std::string> argv, const std::string& stdin_data, std::chrono::milliseconds timeout,
              const std::vector<std::string>& extra_env) {
  Process p(std::move(argv), stdin_data, extra_env);
  RunResult r;
  r.exit_code = p.wait(timeout);
  if (!r.exit_code) {
    p.signal(SIGKILL);
    p.wait(5s);
  }
  r.out = p.out();
  r.err = p.err();
  return r;
}

std::size_t count_lines(const std::string& text) {
  std::size_t n = 0;
  for (char c : text) n += c == '\n';
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

}  // namespace keysvc::test
