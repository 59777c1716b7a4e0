// The unprivileged user web server workers run as in the tests, and what that user is
// given of the test token.
//
// Run as root, the nginx and Apache httpd tests start the servers the way Debian runs
// them: master/parent as root, workers/children as www-data. The workers open the token
// themselves, with the PIN the master read (the PIN file stays root's, mode 0600), so
// www-data needs the SoftHSM token folder as its own: SoftHSM 2.6 makes every file it
// creates mode 0600 for its creator. Processes that write to the token (keysvcctl
// rotate, server-key create) then run as www-data too, with the PIN in their environment
// only (--pin-source env:...). Run as another user, everything runs as that user.
//
//   keysvc::test::share_token_with_worker();           // once, before a server starts
//   run(as_worker({ctl, "--config", toml, "--pin-source", kWorkerPinSource, "rotate"}),
//       "", timeout, worker_pin_env());
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace keysvc::test {

struct WorkerUser {
  std::string name;  // "www-data"
  uid_t uid = 0;
  gid_t gid = 0;
};

// www-data when this process runs as root (Debian's nginx.conf and apache2 envvars use
// it); std::nullopt otherwise. Throws if running as root and www-data does not exist.
const std::optional<WorkerUser>& worker_user();

// Gives the worker user the test token (TestToken): the token folder becomes its own,
// the test folder traversable and softhsm2.conf readable; the PIN file stays this
// user's, mode 0600. Once per process; nothing when there is no worker user. Throws if the
// worker user still cannot reach the token (a parent folder it cannot traverse).
void share_token_with_worker();

// Makes `path` (a folder, recursively) the worker user's, e.g. a folder the workers
// write to (audit logs, fault module stats). Nothing when there is no worker user.
void give_to_worker(const std::string& path);

// `argv` run as the worker user (setpriv), or unchanged when there is none.
std::vector<std::string> as_worker(std::vector<std::string> argv);

// The PIN source keysvcctl gets when it runs as the worker user, and the environment
// entry that carries the test token's PIN to that one child.
inline constexpr char kWorkerPinVariable[] = "KEYSVC_TEST_WORKER_PIN";
inline constexpr char kWorkerPinSource[] = "env:KEYSVC_TEST_WORKER_PIN";
std::vector<std::string> worker_pin_env();

}  // namespace keysvc::test
