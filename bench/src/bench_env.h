// The benchmark's own HSM environment: a private SoftHSM2 token folder, and for the
// remote mode a `p11-kit server` exporting a second token on a unix socket in that
// folder. Nothing here touches /etc/softhsm or /var/lib/softhsm.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace keysvc::bench {

inline constexpr char kSoftHsmModule[] = "/usr/lib/softhsm/libsofthsm2.so";
inline constexpr char kP11KitClient[] = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
// One token per generation tier: the tier is chosen per generation, by whoever creates it.
// The default (epoch tier) modes' local token.
inline constexpr char kLocalToken[] = "keysvc-bench";
// The p11-kit server's token (epoch tier, keysvc-epoch-p11kit).
inline constexpr char kRemoteToken[] = "keysvc-bench-remote";
// The strict tier without opt-ins (two HMAC-SHA256 C_Signs per ticket on token objects).
inline constexpr char kStrictToken[] = "keysvc-bench-strict";
// The strict tier with session copies and derivation 2 (guarded and inline modes share it).
inline constexpr char kCopiesV2Token[] = "keysvc-bench-copies-v2";
// The slow-HSM section's two tokens, reached through the fault module: one with 250 ms
// added to every C_Sign, one without (its reference).
inline constexpr char kFaultToken[] = "keysvc-bench-fault";
inline constexpr char kSlowToken[] = "keysvc-bench-slow";

// A child process started with fork/exec; it gets SIGTERM if the bench dies.
class Child {
 public:
  Child() = default;
  // Starts argv[0] (searched in PATH) with stdout and stderr appended to `log_path`.
  Child(const std::vector<std::string>& argv, const std::string& log_path);
  ~Child() { stop(); }
  Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // SIGTERM, then SIGKILL after `grace_ms`. Returns the exit status text ("exit 0",
  // "signal 9", ...), or "" if it was not running.
  std::string stop(int grace_ms = 3000);

 private:
  pid_t pid_ = -1;
};

class BenchEnv {
 public:
  // Creates BASE/keysvc-bench-XXXXXX with softhsm2.conf, points SOFTHSM2_CONF at it
  // (before any module is loaded), initialises every token above with random PINs and
  // writes the configs below (but the fault module's). `base` empty: $KEYSVC_BENCH_TMPDIR or /tmp.
  explicit BenchEnv(std::string base = {});
  ~BenchEnv();  // stops the p11-kit server, removes the folder
  BenchEnv(const BenchEnv&) = delete;
  BenchEnv& operator=(const BenchEnv&) = delete;

  const std::string& dir() const { return dir_; }
  // keysvc's defaults (epoch tier) on the local token.
  std::string local_config() const { return dir_ + "/local.toml"; }
  // The defaults through p11-kit (the remote token).
  std::string remote_config() const { return dir_ + "/remote.toml"; }
  // rotation.tier = "strict", nothing else changed (derivation 1, no session copies).
  std::string strict_config() const { return dir_ + "/strict.toml"; }
  // The strict tier with hsm.session_copies + rotation.copyable_keys and
  // rotation.derivation = 2 (one HMAC-SHA512 per ticket), the HSM guard on.
  std::string strict_copies_v2_config() const { return dir_ + "/strict-copies-v2.toml"; }
  // strict_copies_v2_config with hsm.call_timeout = 0: the HSM call runs on the handshake
  // thread (no hand-off to a guard worker, no deadline), on the same token.
  std::string strict_copies_v2_inline_config() const { return dir_ + "/strict-copies-v2-inline.toml"; }
  // keysvc's defaults through the fault module (which forwards to SoftHSM) on the fault
  // token, or on the slow token (`slow`); written by write_faultmod_configs. The fault
  // module's control file is per process (environment), so the two run in separate
  // server processes.
  std::string faultmod_config(bool slow) const {
    return dir_ + (slow ? "/faultmod-slow.toml" : "/faultmod.toml");
  }
  // Writes the two fault-module configs for the module at `faultmod`.
  void write_faultmod_configs(const std::string& faultmod) const;

  // Starts `p11-kit server` for the remote token and sets P11_KIT_SERVER_ADDRESS for
  // this process and its children. Returns "" on success, else why it did not start.
  std::string start_remote();
  bool remote_running() { return p11kit_.running(); }
  void stop_remote() { p11kit_.stop(); }

 private:
  std::string dir_;
  Child p11kit_;
};

// Reads a whole file ("" if it cannot be read).
std::string read_file(const std::string& path);
// Random alphanumeric text.
std::string random_text(std::size_t n);

}  // namespace keysvc::bench
