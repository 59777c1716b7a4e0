// The PIN rotation procedure of docs/SECURITY.md under load: while keysvc-tls-server
// serves full and resumed handshakes (openssl s_client), the user PIN is changed in the
// token (pkcs11-tool --change-pin, PINs through env:) and then in the PIN file. A
// re-login in between (forced: the HSM "goes away" with device errors, the server
// restarts its module, which logs it out) is refused once and never retried with the
// same PIN; once the file holds the new PIN the server logs in at its next attempt and
// resumes tickets again. No handshake fails at any point.
#include <gtest/gtest.h>
#include <stdio.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "fault_control.h"
#include "known_secrets.h"
#include "process.h"
#include "test_token.h"
#include "tls_server_process.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;
using test::TestToken;
using test::TlsServerProcess;
using test::TlsVersion;

// pkcs11-tool --change-pin on the test token, straight through SoftHSM.
// The PINs reach it in its own environment only (never in an argv, and never in this
// process's environment, which the load's threads read as they start clients).
void change_pin(const std::string& from, const std::string& to) {
  auto r = test::run({"pkcs11-tool", "--module", test::kSoftHsmModule, "--token-label", "keysvc-test", "--login",
                      "--pin", "env:KEYSVC_OLD_PIN", "--change-pin", "--new-pin", "env:KEYSVC_NEW_PIN"},
                     "", 30s, {"KEYSVC_OLD_PIN=" + from, "KEYSVC_NEW_PIN=" + to});
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << test::describe(r);
}

// Replaces the PIN file as the procedure says: a new file renamed over the old one.
void write_pin_file(const std::string& path, const std::string& pin) {
  const std::string tmp = path + ".new";
  std::ofstream(tmp) << pin << "\n";
  ASSERT_EQ(::rename(tmp.c_str(), path.c_str()), 0);
}

// Client load: s_client full handshakes and resumptions in turn, counted.
class ClientLoad {
 public:
  explicit ClientLoad(int port) : port_(port) {
    thread_ = std::thread([this] { run(); });
  }
  ~ClientLoad() { stop(); }
  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t handshakes() const { return handshakes_; }
  std::uint64_t resumed() const { return resumed_; }
  std::uint64_t failed() const { return failed_; }
  std::string first_failure() const {
    std::lock_guard lock(mutex_);
    return first_failure_;
  }

 private:
  // Never throws: an exception escaping a thread would end the test process and leave
  // the server running.
  void run() noexcept {
    const std::string sess = test::tls_test_dir() + "/rotation-load.pem";
    for (int i = 0; !stopping_; ++i) {
      const bool resume = i % 2 == 1;
      try {
        auto r = test::s_client(port_, TlsVersion::kTls13, resume ? "-sess_in" : "-sess_out", sess);
        ++handshakes_;
        if (r.exit_code != std::optional<int>(0)) {
          fail(test::describe(r));
        } else if (resume && r.out.find("Reused, TLSv1.3") != std::string::npos) {
          ++resumed_;
        }
      } catch (const std::exception& e) {
        fail(e.what());
        std::this_thread::sleep_for(100ms);
      }
    }
  }
  void fail(const std::string& what) {
    ++failed_;
    std::lock_guard lock(mutex_);
    if (first_failure_.empty()) first_failure_ = what;
  }
  int port_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> handshakes_{0}, resumed_{0}, failed_{0};
  mutable std::mutex mutex_;
  std::string first_failure_;
};

// Polls `done` every 20 ms for up to `limit`; true once it holds.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = 30s) {
  for (auto end = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < end;) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

TEST(PinRotation, UnderLoadTheTokenRefusesOneLoginAtMost) {
  TestToken& token = TestToken::get();
  const std::string dir = token.dir() + "/rotation";
  std::filesystem::create_directories(dir);
  const std::string pin_file = dir + "/pin";
  write_pin_file(pin_file, token.pin());
  const std::string new_pin = "rotated-" + test::random_text(16);
  test::remember_secret_text(new_pin);

  test::FaultControl faults(dir + "/faults");
  faults.export_env();
  const std::string config = dir + "/keysvc.toml";
  std::ofstream(config) << "[hsm]\nmodule = \"" << test::FaultControl::module_path() << "\"\ntoken = \""
                        << token.token_uri() << "\"\npin = \"file:pin\"\nsessions = 2\n"
                        << "call_timeout = \"2s\"\nbreaker_threshold = 2\nbreaker_backoff = \"50ms\"\n"
                        << "[tickets]\nissue_pool = 0\n"
                        // HSM calls on every handshake make the re-logins this is about.
                        << "[rotation]\ntier = \"strict\"\n";
  TlsServerProcess server(KEYSVC_TLS_SERVER_BIN, {.config = config});
  ClientLoad load(server.port());
  ASSERT_TRUE(eventually([&] { return load.resumed() >= 2; })) << server.process().err();

  // 1. The new PIN in the token, servers running and logged in.
  change_pin(token.pin(), new_pin);
  const std::uint64_t inits = faults.stats().calls_to("C_Initialize");

  // A re-login before the file has the new PIN: the HSM fails until the server restarts
  // its module (which also makes SoftHSM read the token's new PIN: it keeps the PIN
  // state it read at C_Initialize otherwise), then comes back.
  const std::string kRefused = "): no login is attempted with it again until that source changes";
  faults.set("C_Sign CKR_DEVICE_ERROR\nC_SignInit CKR_DEVICE_ERROR\n");
  ASSERT_TRUE(eventually([&] { return faults.stats().calls_to("C_Initialize") > inits; })) << server.process().err();
  faults.clear();
  ASSERT_TRUE(eventually([&] { return server.process().err().find(kRefused) != std::string::npos; }))
      << server.process().err();
  // Handshakes go on (full ones: no ticket can be issued or opened) and the refused PIN
  // is not tried again, however often the server needs the HSM.
  std::this_thread::sleep_for(100ms);  // the module's counters reach its stats file within 20 ms
  const std::uint64_t logins = faults.stats().calls_to("C_Login");
  const std::uint64_t during = load.handshakes();
  ASSERT_TRUE(eventually([&] { return load.handshakes() >= during + 8; }));
  EXPECT_EQ(faults.stats().calls_to("C_Login"), logins) << "a refused PIN was tried again";

  // 2. The new PIN in the file: logged in again (the counters are read while the load
  // goes on: the module writes them only while calls are made), tickets resume again.
  // Later logins (after the last session closed) succeed: the refusal below is the one.
  write_pin_file(pin_file, new_pin);
  const std::uint64_t resumed = load.resumed();
  EXPECT_TRUE(eventually([&] { return load.resumed() > resumed; })) << server.process().err();
  EXPECT_TRUE(eventually([&] { return faults.stats().calls_to("C_Login") > logins; }));
  load.stop();
  EXPECT_EQ(load.failed(), 0u) << load.first_failure();

  const std::string log = server.stop();
  std::size_t refusals = 0;
  for (std::size_t at = 0; (at = log.find(kRefused, at)) != std::string::npos; ++at)
    ++refusals;
  EXPECT_EQ(refusals, 1u) << "refused logins (one report line each)\n" << log;
  EXPECT_EQ(log.find(new_pin), std::string::npos) << "the new PIN appears in the server's log";
  change_pin(new_pin, token.pin());  // the test token as it was
}

}  // namespace
}  // namespace keysvc
