// Real audit files for tests: keysvcctl and keysvc-tls-server with [audit] on, against
// the test token, driven by openssl s_client.
//
//   AuditScenario s("audit_anomalies/" + test_name, KEYSVCCTL_BIN, KEYSVC_TLS_SERVER_BIN, {});
//   std::string g1 = s.generate();                 // keysvcctl keys generate
//   auto server = s.start_server();
//   s.full_handshakes(server->port(), 2);          // TLS 1.3: 2 * per_handshake issued
//   s.ctl({"keys", "revoke", g1});
//   s.wait_for_usage(server->port(), [&](const Json& u) { ... });
//   server->stop();
//   RunResult rep = s.ctl({"audit", "report", "--json", s.ctl_log(), s.server_log()}, false);
//
// The config is the test token's plus [audit] (the server's file and keysvcctl's next to
// it, under $KEYSVC_TEST_TMPDIR/logs/NAME, kept for the suite's secret scan) and
// [rotation] with refresh_interval = 1h and self_rotate = false: a running server does not
// see what keysvcctl changes in the token (a server that stopped rescanning), so it keeps
// issuing under the generation it started with as long as it can use its keys (a revoked
// generation's keys are destroyed: only a server with session copies can).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.h"
#include "tls_server_process.h"

namespace keysvc::test {

class AuditScenario {
 public:
  using Json = nlohmann::json;
  struct Options {
    std::string summary_interval = "1s";  // [audit] summary_interval ("0": only at shutdown)
    // A seal also flushes the server's file (records are buffered until then): tests that
    // read a running server's file want it short.
    std::string seal_interval = "1s";
    // hsm.session_copies + rotation.copyable_keys: the server derives with its own
    // session-object copies of the keys, so it keeps using a generation keysvcctl revoked
    // (destroyed in the token) until it rescans.
    bool session_copies = false;
  };

  // Clears the test token and empties the log folder.
  AuditScenario(const std::string& name, std::string keysvcctl_bin, std::string server_bin, Options options);

  // keysvcctl [--config CONFIG] ARGS...
  RunResult ctl(std::vector<std::string> args, bool with_config = true) const;
  // `keys generate`: the new generation's name (gtest failure and "" if it fails).
  std::string generate() const;
  // `keys generate` for a generation that takes over from the current one at once: waits
  // until the wall clock is past the newest generation's encrypt_from (keys generate
  // within that second schedules the new one for the next second, and keysvcctl then
  // records no switch), so keysvcctl's file gets activated and decrypt_only records.
  std::string generate_successor() const;
  // keysvc-tls-server on the scenario's config (throws if it does not start).
  std::unique_ptr<TlsServerProcess> start_server() const;
  // `n` full TLS 1.3 handshakes, each saving its session to DIR/sessions/TAG-K.pem (gtest
  // failures if one is not a full handshake). Returns the session files.
  std::vector<std::string> full_handshakes(int port, int n, const std::string& tag = "s") const;

  // The records of an audit file, parsed (lines that are not JSON are skipped).
  static std::vector<Json> records(const std::string& file);
  // The "ts" (Unix ms) of the first record of `event` naming `name` in `file`.
  static std::optional<std::int64_t> event_time(const std::string& file, const std::string& event,
                                                const std::string& name);
  // A record's period_start / period_end (Unix ms); 0 if it has none.
  static std::int64_t period_start(const Json& usage);
  // `name`'s count of `outcome` ("issued", "resumed") in a usage record (0 if absent).
  static std::uint64_t count(const Json& usage, const std::string& name, const std::string& outcome);

  // Makes one full handshake at a time until the server's file has a usage record for
  // which `done` is true (at most `limit` handshakes; returns whether it came).
  bool wait_for_usage(int port, const std::function<bool(const Json&)>& done, int limit = 60) const;
  // wait_for_usage() for a usage record whose period starts after `t` (Unix ms) and that
  // counts tickets issued under `name`.
  bool wait_for_issued_after(int port, const std::string& name, std::int64_t t) const;

  const std::string& dir() const { return dir_; }
  const std::string& config() const { return config_; }
  const std::string& server_log() const { return server_log_; }
  const std::string& ctl_log() const { return ctl_log_; }

 private:
  std::string keysvcctl_, server_bin_;
  std::string dir_, config_, server_log_, ctl_log_;
  mutable int sessions_ = 0;
};

// ISO-8601 UTC with milliseconds (as the audit log writes it) -> Unix ms; 0 if it is not.
std::int64_t audit_time_ms(const std::string& iso);

}  // namespace keysvc::test
