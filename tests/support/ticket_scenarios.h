// The ticket scenarios every keysvc web server module is tested with (tests/nginx,
// tests/apache), on servers the test has started with keysvc tickets on after rotate()
// published a generation. Each checks with gtest assertions, prints its figures, and
// stops the servers with stop_and_check(). Waits are bounded; nothing asserts a duration.
#pragma once

#include <string>

#include "fault_control.h"
#include "prefork_server.h"
#include "tls_clients.h"

namespace keysvc::test {

// The server runs `workers` workers: each opened the token itself (it maps SoftHSM and
// logged "keysvc: opened ... in <worker|child> PID"), the master did not; as root they
// run as the worker user, who cannot read the PIN file; a ticket resumes.
void opens_the_token_in_each_worker_not_in_the_master(PreforkServer& server, std::size_t workers);

// A ticket issued before `reload_signal` (nginx's SIGHUP, httpd's graceful SIGUSR1)
// resumes on the new workers, which opened the token again; they issue fresh tickets.
// `what` names the reload in the figure.
void tickets_survive_a_reload(PreforkServer& server, int reload_signal, const std::string& what);

// s_client: one full handshake, then resumptions each offering the newest ticket, until
// they have met at least two other workers than the issuer's.
void s_client_resumes_across_workers(PreforkServer& server, TlsVersion v);

// curl: one invocation, many URLs, a new connection for each; every one after the first
// resumes (curl offers its newest session), whichever worker it meets. TLS 1.3 only (see
// curl_requests()).
void curl_resumes_tls13_across_workers(PreforkServer& server);

// Two instances on one token: a ticket from either resumes on the other and back.
void resumes_across_instances(PreforkServer& a, PreforkServer& b, TlsVersion v);

// A TOML of 3-second generations (8 s decrypt window, 1 s refresh) for rotation_under_load.
std::string write_rotating_toml(const std::string& file);

// Two instances on `toml` (write_rotating_toml); `keysvcctl rotate` every second rolls
// generations for 10 s while clients make full handshakes on one instance and resume on
// the other and back (s_client, TLS 1.3 and 1.2), and curl bursts (TLS 1.3) resume
// across workers. Counts resumption failures (expected: 0).
void rotation_under_load(PreforkServer& a, PreforkServer& b, const std::string& toml);

// A TOML whose module is keysvc-faultmod in front of SoftHSM (1 s refresh, strict tier).
std::string write_faultmod_toml(const std::string& file);

// The fault scenario's control folder, given to the worker user (the fault module in
// each worker reads its control file and writes its stats there), its variables
// exported for the servers the test starts next.
FaultControl worker_faults();

// The HSM fails every call while the server runs: handshakes succeed as full ones, no
// ticket is opened, no worker dies; when it is back, tickets from before resume and
// fresh tickets work again.
void stays_up_when_the_hsm_fails(PreforkServer& server, const FaultControl& faults);

// The server was started while C_OpenSession failed: every worker logged "keysvc:
// cannot open"; handshakes are full with no ticket at all; when the HSM returns, the
// workers open the token and tickets resume.
void turns_tickets_on_when_the_hsm_returns(PreforkServer& server, const FaultControl& faults);

}  // namespace keysvc::test
