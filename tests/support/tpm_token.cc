#include "tpm_token.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <thread>

#include "known_secrets.h"
#include "test_token.h"

namespace keysvc::test {

namespace {

using namespace std::chrono_literals;

// Binds 127.0.0.1:port (0: any); returns the port, or 0 if it is taken. Closed at once.
int try_bind(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int got = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    got = ntohs(a.sin_port);
  ::close(fd);
  return got;
}

// Two free consecutive ports: swtpm's TCTI reaches the control port at port + 1.
int free_port_pair() {
  for (int i = 0; i < 50; ++i) {
    const int p = try_bind(0);
    if (p > 0 && p < 65535 && try_bind(p + 1) == p + 1) return p;
  }
  throw std::runtime_error("no two free consecutive ports for swtpm");
}

// Runs `argv` until it exits 0 or `timeout` passes (a daemon still starting up). Before
// each try, `revive()` may start again a daemon that has exited.
void retry_until_ok(const std::vector<std::string>& argv, std::chrono::seconds timeout, const std::string& what,
                    const std::function<void()>& revive) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  RunResult r;
  while (std::chrono::steady_clock::now() < deadline) {
    revive();
    r = run(argv, "", 10s);
    if (r.exit_code == std::optional<int>(0)) return;
    std::this_thread::sleep_for(50ms);
  }
  throw std::runtime_error(what + " did not come up: " + r.err);
}

}  // namespace

TpmToken& TpmToken::get() {
  static TpmToken* token = new TpmToken();
  static struct Cleanup {
    ~Cleanup() { delete token; }
  } cleanup;
  return *token;
}

TpmToken::TpmToken() {
  dir_ = make_test_dir("keysvc-tpm");
  std::filesystem::create_directories(dir_ + "/state");
  std::filesystem::create_directories(dir_ + "/store");
  const int port = free_port_pair();
  swtpm_ = std::make_unique<Process>(std::vector<std::string>{
      "swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + dir_ + "/state", "--server",
      "type=tcp,port=" + std::to_string(port) + ",bindaddr=127.0.0.1", "--ctrl",
      "type=tcp,port=" + std::to_string(port + 1) + ",bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear"});
  dbus_ = std::make_unique<Process>(std::vector<std::string>{"dbus-daemon", "--session", "--nofork", "--nopidfile",
                                                             "--address=unix:path=" + dir_ + "/bus"});
  const std::string bus = "unix:path=" + dir_ + "/bus";
  ::setenv("DBUS_SESSION_BUS_ADDRESS", bus.c_str(), 1);
  for (int i = 0; i < 200 && !std::filesystem::exists(dir_ + "/bus"); ++i) std::this_thread::sleep_for(10ms);
  // As root abrmd wants --allow-root; --flush-all empties the TPM's object slots. abrmd
  // exits at once if swtpm does not answer yet (its start is not waited for): then it is
  // started again before the next try below.
  const std::vector<std::string> abrmd{"tpm2-abrmd", "--session", "--allow-root", "--flush-all",
                                       "--tcti=swtpm:host=127.0.0.1,port=" + std::to_string(port)};
  auto start_abrmd_unless_running = [&] {
    if (!abrmd_ || abrmd_->poll()) abrmd_ = std::make_unique<Process>(abrmd);
  };
  ::setenv("TPM2_PKCS11_TCTI", "tabrmd:bus_type=session", 1);
  ::setenv("TPM2TOOLS_TCTI", "tabrmd:bus_type=session", 1);
  ::setenv("TPM2_PKCS11_STORE", (dir_ + "/store").c_str(), 1);
  ::setenv("KEYSVC_TPM2_KEY_TOOL", KEYSVC_TPM2_KEY_TOOL, 1);
  // tpm2-pkcs11 logs warnings (an unset CKA_VALUE read...) on stderr unless told not to.
  ::setenv("TPM2_PKCS11_LOG_LEVEL", "0", 1);
  retry_until_ok({"tpm2_getrandom", "--hex", "8"}, 20s, "tpm2-abrmd on swtpm", start_abrmd_unless_running);

  pin_ = random_text(16);
  const std::string so_pin = random_text(16);
  remember_secret_text(pin_);
  remember_secret_text(so_pin);
  RunResult r = run({KEYSVC_TPM2_KEY_TOOL, "addtoken"},
                    "{\"token\": \"keysvc-test\", \"userpin\": \"" + pin_ + "\", \"sopin\": \"" + so_pin + "\"}", 60s);
  if (r.exit_code != std::optional<int>(0)) throw std::runtime_error("keysvc-tpm2-keys addtoken failed: " + r.err);
  write_pin_and_config();
}

TpmToken::~TpmToken() {
  for (auto* p : {&abrmd_, &dbus_, &swtpm_}) {
    if (!*p) continue;
    (*p)->signal(SIGTERM);
    (*p)->wait(5s);
    p->reset();
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

}  // namespace keysvc::test
