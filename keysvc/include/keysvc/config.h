// keysvc's configuration file (TOML). The format, with defaults:
//
//   [hsm]
//   module   = "/usr/lib/softhsm/libsofthsm2.so"  # PKCS#11 module (required)
//   token    = "pkcs11:token=keysvc"              # RFC 7512 token URI (required)
//   pin      = "file:pin"                         # file:PATH or env:NAME; or pin-source
//                                                 # / pin-value in the URI
//   sessions = 4                                  # size of the session pool
//   session_copies = false    # derive with per-process session-object copies of the
//                             # generation keys whose keys are copyable (see
//                             # rotation.copyable_keys; session_key_cache.h): about 3x
//                             # cheaper per HMAC in SoftHSM. Uses one more session.
//   call_timeout      = "500ms"  # deadline of one ticket-path HSM operation (a derivation,
//                                # a ring rescan): handshakes stop waiting after it and serve
//                                # a full handshake; the hung call's session is quarantined
//                                # and the breaker opens (hsm_guard.h). 0: no deadline, calls
//                                # run on the handshake thread. At most 60s.
//   maintenance_timeout = "10s"  # deadline of background and tool work through the token
//                                # gateway (ring scans, rotation, audit seals, epoch keys,
//                                # keysvcctl): 100ms..10m (token_gateway.h)
//   breaker_threshold = 5        # consecutive HSM failures that open the circuit breaker
//                                # (1..1000; circuit_breaker.h)
//   breaker_backoff   = "250ms"  # an open breaker lets one probe through this often
//                                # (1ms..60s): the HSM sees at most one call per backoff
//                                # while it fails, and resumption is back within about
//                                # one backoff after it recovers
//
//   [tickets]
//   per_handshake   = 2       # TLS 1.3 tickets sent after a full handshake
//   lifetime        = "2h"    # ticket lifetime hint and session timeout
//   max_session_age = "24h"   # no resumption once the original full handshake is older
//   create_if_empty = true    # create the first generation if the token has none
//   epoch           = "5m"    # the epoch tier's epoch: a whole divisor of encrypt_period;
//                             # default 5m, or the largest divisor of a shorter period
//   issue_pool      = 64      # strict tier: per-ticket keys derived ahead for issuing (0: off;
//                             # see issue_pool.h for what that keeps in memory)
//
//   [rotation]                # see schedule.h and rotation.h
//   encrypt_period   = "1h"   # each generation encrypts new tickets this long
//   publish_lead     = "10m"  # created at least this long before it encrypts
//   decrypt_window   = (tickets.lifetime)  # decrypts this long after its encrypt window
//                             # (encrypt_period, publish_lead, decrypt_window: at most 31d;
//                             # a token record reaching further is refused: key_custody.h)
//   clock_skew       = "30s"  # tolerated clock difference between servers
//   refresh_interval = "30s"  # servers rescan the token this often
//   self_rotate      = true   # this server rotates for itself (single node)
//   copyable_keys    = false  # custody opt-in: generations this process creates get
//                             # CKA_COPYABLE=TRUE and CKA_MODIFIABLE=TRUE, so servers with
//                             # hsm.session_copies may copy them into session objects.
//                             # Copies stay sensitive and non-extractable, but whoever holds
//                             # the user PIN may copy the keys and change their non-custody
//                             # attributes (docs/PERFORMANCE.md, "Session copies"). The
//                             # default keeps keys uncopyable and unmodifiable.
//   tier             = "epoch" # generations this process creates: "epoch" (the token derives
//                             # one key per epoch, per-ticket keys come from it in process:
//                             # no HSM call per ticket) or "strict" (one HSM operation per
//                             # ticket, by `derivation`); docs/DERIVATION.md, docs/SECURITY.md
//   derivation       = 1      # the strict tier's per-ticket derivation:
//                             # 1 = two HMAC-SHA256 under two keys; 2 = one HMAC-SHA512
//                             # under one 64-byte key (half the HSM calls; a v2 record that
//                             # keysvc versions before it ignore: set it only once every
//                             # server runs a version that reads it; docs/DERIVATION.md)
//
//   [log]
//   level = "info"            # trace, debug, info, warn, error, off
//
//   [metrics]                 # Prometheus metrics (docs/METRICS.md)
//   listen = ""               # numeric IPv4 HOST:PORT where keysvc-tls-server serves
//                             # /metrics, e.g. "127.0.0.1:9464" (listen_address.h);
//                             # empty or absent: no metrics endpoint
//
//   [process]                 # docs/SECURITY.md
//   core_dumps = false        # false: a process that opens keysvc becomes non-dumpable
//                             # (prctl PR_SET_DUMPABLE 0, soft RLIMIT_CORE 0): no core
//                             # file, no ptrace or /proc/PID/mem by the same user.
//                             # true: for debugging; secrets in secure memory stay out
//                             # of core dumps either way (MADV_DONTDUMP)
//
//   [audit]                   # the tamper-evident audit trail (audit_trail.h, docs/AUDIT.md)
//   path             = ""     # the server's JSON Lines file; empty or absent: no audit log.
//                             # keysvcctl writes to its own file next to it, with
//                             # "-keysvcctl" before the extension (audit_trail.h).
//                             # "{pid}" becomes the writer's process ID ("keysvcctl"
//                             # for keysvcctl): one file per process when several
//                             # processes use this config (nginx workers)
//   seal_interval    = "60s"  # seal (HMAC in the token) this often when records were added;
//                             # 0: only at shutdown. The tail after the last seal is
//                             # reported "unsealed" by verify until the next seal
//   anchor_retention = "30d"  # a writer's anchor in the token (audit_anchor.h) is removed
//                             # this long after its last seal, when another writer starts
//                             # a chain; 0: never. Verify a file within it to detect a cut
//                             # after its last seal or a rollback
//   summary_interval = "60s"  # write a usage record per key name this often (and at
//                             # shutdown); 0: only at shutdown
//   per_handshake    = false  # also one record per ticket outcome (costly on busy servers)
//   fsync            = true   # lifecycle events are fsync'ed before a command reports success
//
// Relative paths (module, file: PIN sources) are relative to the config file's folder.
// Durations are an integer number of seconds or a number with s, m, h or d (and ms where
// noted).
// Unknown keys are errors, so a typo never silently falls back to a default.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/token_uri.h"
#include "keysvc/schedule.h"

namespace keysvc {

using ConfigError = hsm::ConfigError;

struct HsmConfig {
  std::string module;
  // A pin-value in the URI is kept in secure memory, never in this text (token_uri.h).
  hsm::TokenUriText token_uri;
  std::string pin_source;  // empty: taken from the URI's pin-source / pin-value
  std::size_t sessions = 4;
  bool session_copies = false;  // derive with session-object copies (session_key_cache.h)
  std::chrono::milliseconds call_timeout{500};     // 0: no deadline (hsm_guard.h)
  std::chrono::milliseconds maintenance_timeout{10000};  // token_gateway.h
  unsigned breaker_threshold = 5;                  // circuit_breaker.h
  std::chrono::milliseconds breaker_backoff{250};
};

struct TicketConfig {
  int per_handshake = 2;
  std::chrono::seconds lifetime{std::chrono::hours(2)};
  std::chrono::seconds max_session_age{std::chrono::hours(24)};
  bool create_if_empty = true;
  std::size_t issue_pool = 64;
};

struct AuditConfig {
  std::string path;  // empty: no audit log
  std::chrono::seconds seal_interval{60};
  std::chrono::seconds summary_interval{60};
  bool per_handshake = false;
  bool fsync = true;
  std::chrono::seconds anchor_retention{std::chrono::hours(24 * 30)};  // 0: kept for ever
  bool enabled() const noexcept { return !path.empty(); }
};

struct MetricsConfig {
  std::string listen;  // empty: no metrics endpoint
  bool enabled() const noexcept { return !listen.empty(); }
};

// How a process that holds key material protects itself (docs/SECURITY.md).
struct ProcessConfig {
  bool core_dumps = false;  // true: stays dumpable and traceable (debugging)
};

struct Config {
  MetricsConfig metrics;
  ProcessConfig process;
  HsmConfig hsm;
  TicketConfig tickets;
  RotationPolicy rotation;
  std::string log_level = "info";
  AuditConfig audit;
  std::string source;  // the file it was loaded from (load_file), for the audit log

  // Loads and validates a file. Throws ConfigError with "FILE:LINE: what" on the first
  // problem.
  static Config load_file(const std::string& path);
  // Parses TOML text; `base_dir` resolves relative paths, `source` names it in errors.
  static Config parse(std::string_view toml, const std::string& source, const std::string& base_dir);
};

// Where the config's PIN comes from: hsm.pin, else the token URI's pin-source, else its
// pin-value. Throws ConfigError if there is none.
hsm::PinSource pin_source_of(const Config& config);

// "250ms" -> 250 ms; otherwise as parse_duration ("2s", "1m"; a bare number is seconds).
// Throws ConfigError.
std::chrono::milliseconds parse_duration_ms(std::string_view text);

// "90" -> 90s, "90s", "15m", "2h", "1d". Throws ConfigError.
std::chrono::seconds parse_duration(std::string_view text);

}  // namespace keysvc
