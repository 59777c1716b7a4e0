// ngx_http_keysvc_module's tickets in the real nginx on a real SoftHSM token, with real
// clients (openssl s_client, curl), workers running as www-data when the test runs as
// root; the scenarios are tests/support/ticket_scenarios.h, shared with mod_keysvc:
//   - TLS 1.3 and 1.2 tickets resume across workers and across two nginx instances;
//   - `keysvcctl rotate` run every second under load causes no resumption failure;
//   - an HSM that fails (keysvc-faultmod) gives full handshakes, nginx stays up, and
//     tickets resume again when the HSM is back; a worker that starts while the HSM is
//     down serves full handshakes and turns tickets on when it returns.
//
// Every test name contains "Nginx" (ctest -R Nginx).
#include <gtest/gtest.h>

#include <string>

#include "nginx_keysvc.h"
#include "ticket_scenarios.h"

namespace {

using namespace keysvc::test;

// A published generation (as the operator's rotator would have made) for `toml`.
void publish(const std::string& toml) {
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
}

class NginxResume : public ::testing::TestWithParam<TlsVersion> {};

TEST_P(NginxResume, NginxSClientResumesAcrossWorkers) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  publish(toml);
  NginxInstance nginx(token_subdir("nginx"), keysvc_nginx(4, toml));
  s_client_resumes_across_workers(nginx, GetParam());
}

// curl sets SSL_OP_NO_TICKET, so in TLS 1.2 it resumes only by session ID (nginx's
// ssl_session_cache, not tickets): TLS 1.3 only.
TEST(NginxModule, NginxCurlResumesTls13AcrossWorkers) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  publish(toml);
  NginxInstance nginx(token_subdir("nginx"), keysvc_nginx(4, toml));
  curl_resumes_tls13_across_workers(nginx);
}

TEST_P(NginxResume, NginxResumesAcrossInstances) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  publish(toml);
  NginxInstance a(token_subdir("nginx-a"), keysvc_nginx(2, toml));
  NginxInstance b(token_subdir("nginx-b"), keysvc_nginx(2, toml));
  resumes_across_instances(a, b, GetParam());
}

INSTANTIATE_TEST_SUITE_P(nginx, NginxResume, ::testing::Values(TlsVersion::kTls13, TlsVersion::kTls12),
                         version_param_name);

TEST(NginxModule, NginxRotationUnderLoadCausesNoResumptionFailure) {
  const std::string toml = write_rotating_toml("rotating.toml");
  publish(toml);
  NginxInstance a(token_subdir("nginx-a"), keysvc_nginx(2, toml));
  NginxInstance b(token_subdir("nginx-b"), keysvc_nginx(2, toml));
  rotation_under_load(a, b, toml);
}

// nginx clears its workers' environment: the fault module's variables must be kept.
NginxOptions faultmod_nginx(int workers, const std::string& toml) {
  NginxOptions o = keysvc_nginx(workers, toml);
  o.env = {"KEYSVC_FAULTMOD_CONTROL", "KEYSVC_FAULTMOD_STATS", "KEYSVC_FAULTMOD_TARGET"};
  return o;
}

TEST(NginxModule, NginxStaysUpWhenTheHsmFailsAndResumesWhenItReturns) {
  FaultControl faults = worker_faults();
  const std::string toml = write_faultmod_toml("faulty.toml");
  publish(toml);
  NginxInstance nginx(token_subdir("nginx"), faultmod_nginx(2, toml));
  stays_up_when_the_hsm_fails(nginx, faults);
}

TEST(NginxModule, NginxStartsWhileTheHsmIsDownAndTurnsTicketsOnWhenItReturns) {
  FaultControl faults = worker_faults();
  const std::string toml = write_faultmod_toml("faulty.toml");
  publish(toml);
  faults.set("C_OpenSession CKR_TOKEN_NOT_PRESENT\n");
  NginxInstance nginx(token_subdir("nginx"), faultmod_nginx(2, toml));
  turns_tickets_on_when_the_hsm_returns(nginx, faults);
}

}  // namespace
