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
inline constexpr char kLocalToken[] = "keysvc-bench";
inline constexpr char kRemoteToken[] = "keysvc-bench-remote";
// The session-copy mode's own local token: its generations are made copyable.
inline constexpr char kCopiesToken[] = "keysvc-bench-copies";
// The session-copy + derivation-2 mode's own local token.
inline constexpr char kCopiesV2Token[] = "keysvc-bench-copies-v2";

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
  // (before any module is loaded), initialises the local and remote tokens with random
  // PINs and writes local.toml and remote.toml. `base` empty: $KEYSVC_BENCH_TMPDIR or /tmp.
  explicit BenchEnv(std::string base = {});
  ~BenchEnv();  // stops the p11-kit server, removes the folder
  BenchEnv(const BenchEnv&) = delete;
  BenchEnv& operator=(const BenchEnv&) = delete;

  const std::string& dir() const { return dir_; }
  std::string local_config() const { return dir_ + "/local.toml"; }
  std::string remote_config() const { return dir_ + "/remote.toml"; }
  // hsm.session_copies + rotation.copyable_keys: on the copies token, and on the remote
  // token (which both remote modes share: p11-kit server exports one token; a copyable
  // key costs the same as any other when used as a token object).
  std::string local_copies_config() const { return dir_ + "/local-copies.toml"; }
  std::string remote_copies_config() const { return dir_ + "/remote-copies.toml"; }
  // The same as local_copies_config with rotation.derivation = 2 (one HMAC-SHA512 per ticket).
  std::string local_copies_v2_config() const { return dir_ + "/local-copies-v2.toml"; }
  // local_copies_v2_config with hsm.call_timeout = 0: the HSM call runs on the handshake
  // thread (no hand-off to a guard worker, no deadline), on the same token.
  std::string local_copies_v2_inline_config() const { return dir_ + "/local-copies-v2-inline.toml"; }

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
