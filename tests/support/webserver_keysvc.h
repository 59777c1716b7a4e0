// What the web server tests (nginx, Apache httpd) share about keysvc: a certificate for
// localhost, keysvc TOML files for the test token, `keysvcctl rotate` as an operator's
// timer runs it, and the ticket counters the modules log when a worker exits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "process.h"

namespace keysvc::test {

// A self-signed EC P-256 certificate for localhost and 127.0.0.1, made once per process
// in the test token's folder.
struct Cert {
  std::string cert, key;
};
const Cert& localhost_cert();

// A folder `name` in the test token's folder (created).
std::string token_subdir(const std::string& name);

// A keysvc TOML file for the test token: TestToken's [hsm] with a small pool, and
// rotation by a separate rotator (self_rotate = false: several workers and instances
// are a fleet).
struct KeysvcToml {
  std::string module;  // empty: SoftHSM
  // Short generations (rotation tests) or one long one (everything else).
  std::string lifetime = "60s", encrypt_period = "1h", publish_lead = "10m", decrypt_window = "2h",
              refresh_interval = "30s";
  std::string audit_path;  // [audit] path; empty: no audit
  std::string tier;        // [rotation] tier; empty: the default (epoch)
};
// Writes `file` in the test token's folder (mode 0644: it holds no secret, and workers
// lock it while they open the token) and returns its path.
std::string write_keysvc_toml(const std::string& file, const KeysvcToml& t);

// The keysvcctl binary the tests were built with.
std::string keysvcctl();

// keysvcctl --config `toml` ARGS... as the worker user, with the test token's PIN given
// to it alone (worker_user.h): every command that touches the token runs so, since the
// token's files must stay the worker user's.
RunResult ctl(const std::string& toml, std::vector<std::string> args);

// `keysvcctl rotate` on `toml`, as an operator's timer runs it (as the worker user).
// Returns how many generations it created, or std::nullopt with the reason in `error`.
std::optional<std::size_t> rotate(const std::string& toml, std::string& error);

// Sums of the per-worker counters the modules log at exit: nginx's
// `keysvc: server "NAME" worker PID tickets: issued=...` and mod_keysvc's
// `keysvc: server NAME child PID tickets: issued=...`.
struct TicketCounters {
  std::uint64_t workers = 0, issued = 0, resumed = 0, issue_failed = 0, hsm_error = 0;
};
TicketCounters exit_counters(const std::string& log);

// Stops the server gracefully and checks what every web server test expects of its
// log: exit 0, every worker reported its counters, no PIN, no worker killed by a
// signal, no sanitizer report, and no noise at alert level or above (nginx logs
// OpenSSL errors keysvc would leave on the error queue as "[alert] ignoring stale
// global SSL error"). Returns the summed counters.
class PreforkServer;
TicketCounters stop_and_check(PreforkServer& server, std::size_t workers);

// Prints a measured figure in the test's output ("[ figure   ] ...").
void print_figure(const std::string& what);

}  // namespace keysvc::test
