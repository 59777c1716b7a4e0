#include "bench_env.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "keysvc/hsm/module.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/hsm/token.h"

namespace keysvc::bench {

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  ::chmod(path.c_str(), 0600);
}

// The per-mode knobs the bench varies; everything else is keysvc's default.
struct Knobs {
  bool strict = false;        // rotation.tier = "strict" (else keysvc's default, epoch)
  bool copies = false;        // hsm.session_copies + rotation.copyable_keys
  int derivation = 1;         // rotation.derivation (strict tier)
  std::string call_timeout;   // hsm.call_timeout, "" for keysvc's default
};

std::string toml(const std::string& module, const std::string& token, const std::string& pin_file, const Knobs& k = {}) {
  auto flag = [](bool b) { return b ? std::string("true") : std::string("false"); };
  return "[hsm]\nmodule = \"" + module + "\"\ntoken = \"pkcs11:token=" + token + "\"\npin = \"file:" + pin_file +
         "\"\nsessions = 4\n" + (k.call_timeout.empty() ? "" : "call_timeout = \"" + k.call_timeout + "\"\n") +
         "session_copies = " + flag(k.copies) + "\n\n[tickets]\nper_handshake = 2\n\n[rotation]\n" +
         (k.strict ? "tier = \"strict\"\n" : "") + "copyable_keys = " + flag(k.copies) +
         "\nderivation = " + std::to_string(k.derivation) + "\n\n[log]\nlevel = \"warn\"\n";
}

std::string pin_of(const char* token) { return std::string(token) + ".pin"; }

}  // namespace

std::string random_text(std::size_t n) {
  static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string s(n, 'x');
  for (auto& c : s) {
    unsigned char b = 0;
    if (RAND_bytes(&b, 1) != 1) throw std::runtime_error("RAND_bytes failed");
    c = alphabet[b % (sizeof alphabet - 1)];
  }
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Child::Child(const std::vector<std::string>& argv, const std::string& log_path) {
  // posix_spawn, not fork + exec: fork runs keysvc's fork handlers in the child (the
  // services of this process re-initialise their PKCS#11 module there, log in and scan),
  // and a file lock SoftHSM takes meanwhile outlives the exec. The p11-kit server
  // started so once held a lock on the remote token's file for ever, and every client's
  // C_Initialize waited on it (bench_quick timed out). posix_spawn runs no fork handler,
  // and only the descriptors set up here reach the program.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  if (posix_spawn_file_actions_init(&actions) != 0) throw std::runtime_error("posix_spawn_file_actions_init failed");
  int rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, 1, 2);
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  pid_t pid = -1;
  if (rc == 0) rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error(std::string("cannot start ") + args[0] + ": " + std::strerror(rc));
  pid_ = pid;
}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    stop();
    pid_ = o.pid_;
    o.pid_ = -1;
  }
  return *this;
}

bool Child::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return r == 0;
}

std::string Child::stop(int grace_ms) {
  if (pid_ <= 0) return "";
  ::kill(pid_, SIGTERM);
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  for (;;) {
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || r < 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

BenchEnv::BenchEnv(std::string base) {
  if (base.empty()) {
    const char* env = std::getenv("KEYSVC_BENCH_TMPDIR");
    base = env && *env ? env : "/tmp";
  }
  std::filesystem::create_directories(base);
  std::string tmpl = base + "/keysvc-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed in " + base);
  dir_ = std::filesystem::absolute(tmpl).string();
  std::filesystem::create_directories(dir_ + "/tokens");
  write_file(dir_ + "/softhsm2.conf", "directories.tokendir = " + dir_ +
                                          "/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
                                          "slots.removable = false\n");
  ::setenv("SOFTHSM2_CONF", (dir_ + "/softhsm2.conf").c_str(), 1);

  auto module = hsm::Module::load(kSoftHsmModule);
  for (const char* label : {kLocalToken, kRemoteToken, kStrictToken, kCopiesV2Token, kFaultToken, kSlowToken}) {
    std::string pin = random_text(16);
    hsm::Token::init_free_slot(module, label, hsm::SecretString(random_text(16)), hsm::SecretString(pin));
    write_file(dir_ + "/" + label + ".pin", pin + "\n");
  }
  write_file(local_config(), toml(kSoftHsmModule, kLocalToken, pin_of(kLocalToken)));
  write_file(remote_config(), toml(kP11KitClient, kRemoteToken, pin_of(kRemoteToken)));
  write_file(strict_config(), toml(kSoftHsmModule, kStrictToken, pin_of(kStrictToken), {.strict = true}));
  const Knobs copies_v2{.strict = true, .copies = true, .derivation = 2};
  write_file(strict_copies_v2_config(), toml(kSoftHsmModule, kCopiesV2Token, pin_of(kCopiesV2Token), copies_v2));
  Knobs inline_v2 = copies_v2;
  inline_v2.call_timeout = "0ms";
  write_file(strict_copies_v2_inline_config(), toml(kSoftHsmModule, kCopiesV2Token, pin_of(kCopiesV2Token), inline_v2));
}

void BenchEnv::write_faultmod_configs(const std::string& faultmod) const {
  write_file(faultmod_config(false), toml(faultmod, kFaultToken, pin_of(kFaultToken)));
  write_file(faultmod_config(true), toml(faultmod, kSlowToken, pin_of(kSlowToken)));
}

BenchEnv::~BenchEnv() {
  p11kit_.stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string BenchEnv::start_remote() {
  if (::access(kP11KitClient, R_OK) != 0) return std::string("no ") + kP11KitClient;
  const std::string socket = dir_ + "/p11kit.sock";
  const std::string log = dir_ + "/p11kit-server.log";
  try {
    p11kit_ = Child({"p11-kit", "server", "-f", "-n", socket, "--provider", kSoftHsmModule,
                     std::string("pkcs11:token=") + kRemoteToken},
                    log);
  } catch (const std::exception& e) {
    return std::string("cannot start p11-kit server: ") + e.what();
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!p11kit_.running()) {
      std::string text = read_file(log);
      while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
      for (auto& c : text)
        if (c == '\n') c = ' ';
      return "p11-kit server exited at start" + (text.empty() ? std::string() : ": " + text);
    }
    struct stat st {};
    if (::stat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      ::setenv("P11_KIT_SERVER_ADDRESS", ("unix:path=" + socket).c_str(), 1);
      return "";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  p11kit_.stop();
  return "p11-kit server did not create " + socket + " within 10 s";
}

}  // namespace keysvc::bench
