#include "opencryptoki_token.h"

#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "keysvc/hsm/module.h"
#include "keysvc/hsm/token.h"
#include "known_secrets.h"
#include "process.h"
#include "test_token.h"

namespace keysvc::test {

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("opencryptoki test token: " + what + ": " + std::strerror(errno));
}

// A directory owned by root:pkcs11, mode 0770, as pkcsslotd wants its state directories.
void pkcs11_dir(const std::string& path) {
  std::filesystem::create_directories(path);
  const group* g = ::getgrnam("pkcs11");
  if (g == nullptr) throw std::runtime_error("opencryptoki test token: no group pkcs11 (is opencryptoki installed?)");
  check(::chown(path.c_str(), 0, g->gr_gid) == 0, "chown " + path);
  check(::chmod(path.c_str(), 0770) == 0, "chmod " + path);
}

// This process (and its future children) get private /etc/opencryptoki,
// /var/lib/opencryptoki, /run and /dev/shm, and a private SysV IPC namespace.
void enter_private_namespaces(const std::string& dir) {
  std::size_t threads = 0;
  for ([[maybe_unused]] const auto& t : std::filesystem::directory_iterator("/proc/self/task")) ++threads;
  if (threads != 1)
    throw std::runtime_error("opencryptoki test token: get() must run while the process is single-threaded (" +
                             std::to_string(threads) + " threads)");
  check(::unshare(CLONE_NEWNS | CLONE_NEWIPC) == 0, "unshare");
  check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "make / private");
  std::filesystem::create_directories(dir + "/etc");
  pkcs11_dir(dir + "/lib");
  write_test_file(dir + "/etc/opencryptoki.conf",
                  "version opencryptoki-3.1\n\nslot 3\n{\nstdll = libpkcs11_sw.so\ntokname = keysvc\n}\n", 0644);
  check(::mount((dir + "/etc").c_str(), "/etc/opencryptoki", nullptr, MS_BIND, nullptr) == 0, "bind /etc/opencryptoki");
  check(::mount((dir + "/lib").c_str(), "/var/lib/opencryptoki", nullptr, MS_BIND, nullptr) == 0,
        "bind /var/lib/opencryptoki");
  check(::mount("keysvc-test", "/run", "tmpfs", 0, "mode=0755") == 0, "tmpfs on /run");
  pkcs11_dir("/run/lock/opencryptoki");
  check(::mount("keysvc-test", "/dev/shm", "tmpfs", 0, "mode=1777") == 0, "tmpfs on /dev/shm");
}

}  // namespace

OpencryptokiToken& OpencryptokiToken::get() {
  static OpencryptokiToken* token = new OpencryptokiToken();
  static struct Cleanup {
    ~Cleanup() { delete token; }
  } cleanup;
  return *token;
}

OpencryptokiToken::OpencryptokiToken() {
#if defined(__SANITIZE_ADDRESS__)
  // opencryptoki's soft token keeps OpenSSL objects until exit (keysvc never calls
  // C_Finalize), and LeakSanitizer's stacks of them stop inside the uninstrumented
  // libcrypto, so no suppression can name opencryptoki without hiding keysvc's own
  // OpenSSL leaks too. Leak checking is off for the processes these tests start on it
  // (as for httpd: apache_instance.cc); every other ASan and UBSan check stays on, and
  // keysvc's leaks are checked by the SoftHSM suites.
  const char* asan = std::getenv("ASAN_OPTIONS");
  ::setenv("ASAN_OPTIONS", (std::string(asan ? asan : "") + ":detect_leaks=0").c_str(), 1);
#endif
  dir_ = make_test_dir("keysvc-ock");
  enter_private_namespaces(dir_);
  // pkcsslotd forks into the background and writes its pid file when ready.
  RunResult r = run({"/usr/sbin/pkcsslotd"}, "", std::chrono::seconds(20));
  if (r.exit_code != std::optional<int>(0)) throw std::runtime_error("pkcsslotd did not start: " + r.err);
  for (int i = 0; i < 200 && slotd_pid_ <= 0; ++i) {
    const std::string pid = read_file("/run/pkcsslotd.pid");
    if (!pid.empty() && std::filesystem::exists("/run/pkcsslotd.socket")) slotd_pid_ = std::stoi(pid);
    else std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  if (slotd_pid_ <= 0) throw std::runtime_error("pkcsslotd wrote no pid file or socket");

  pin_ = random_text(8);
  remember_secret_text(pin_);
  auto module = hsm::Module::load(kOpencryptokiModule);
  hsm::Token::init_free_slot(module, "keysvc-test", hsm::SecretString(std::string("87654321")),
                             hsm::SecretString(pin_));
  write_pin_and_config();
}

OpencryptokiToken::~OpencryptokiToken() {
  // Not our child (it daemonised): wait for it to go away rather than reap it. pkcsslotd
  // may sit in accept() past a SIGTERM; then SIGKILL. Its socket, shared memory and
  // lock files are on this process's private tmpfs mounts and vanish with them.
  if (slotd_pid_ > 0 && ::kill(slotd_pid_, SIGTERM) == 0) {
    for (int i = 0; i < 50 && ::kill(slotd_pid_, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ::kill(slotd_pid_, SIGKILL);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

}  // namespace keysvc::test
