// mod_keysvc's tickets in the real Apache httpd (event MPM) on a real SoftHSM token,
// with real clients (openssl s_client, curl), children running as www-data when the
// test runs as root; the scenarios are tests/support/ticket_scenarios.h, shared with the
// nginx module:
//   - TLS 1.3 and 1.2 tickets resume across child processes and across two instances;
//   - `keysvcctl rotate` run every second under load causes no resumption failure;
//   - an HSM that fails (keysvc-faultmod) gives full handshakes, no child dies, and
//     tickets resume again when the HSM is back; children that start while the HSM is
//     down serve full handshakes and turn tickets on when it returns;
//   - mod_ssl's session cache (SSLSessionCache) resumes no session ID where keysvc
//     issues the tickets.
//
// Every test name contains "Apache" (ctest -R Apache).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apache_keysvc.h"
#include "ticket_scenarios.h"

namespace {

using namespace keysvc::test;

// A published generation (as the operator's rotator would have made) for `toml`.
void publish(const std::string& toml) {
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
}

class ApacheResume : public ::testing::TestWithParam<TlsVersion> {};

TEST_P(ApacheResume, ApacheSClientResumesAcrossChildren) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  publish(toml);
  ApacheInstance httpd(token_subdir("httpd"), keysvc_apache(3, toml));
  s_client_resumes_across_workers(httpd, GetParam());
}

TEST(ApacheModule, ApacheCurlResumesTls13AcrossChildren) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  publish(toml);
  ApacheInstance httpd(token_subdir("httpd"), keysvc_apache(3, toml));
  curl_resumes_tls13_across_workers(httpd);
}

TEST_P(ApacheResume, ApacheResumesAcrossInstances) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  publish(toml);
  ApacheInstance a(token_subdir("httpd-a"), keysvc_apache(2, toml));
  ApacheInstance b(token_subdir("httpd-b"), keysvc_apache(2, toml));
  resumes_across_instances(a, b, GetParam());
}

INSTANTIATE_TEST_SUITE_P(apache, ApacheResume, ::testing::Values(TlsVersion::kTls13, TlsVersion::kTls12),
                         version_param_name);

TEST(ApacheModule, ApacheRotationUnderLoadCausesNoResumptionFailure) {
  const std::string toml = write_rotating_toml("rotating.toml");
  publish(toml);
  ApacheInstance a(token_subdir("httpd-a"), keysvc_apache(2, toml));
  ApacheInstance b(token_subdir("httpd-b"), keysvc_apache(2, toml));
  rotation_under_load(a, b, toml);
}

// Debian's ssl.conf sets SSLSessionCache, a global directive. Session-ID resumption would
// bypass keysvc's revocation and max_session_age, so mod_keysvc turns mod_ssl's cache off
// in the SSL_CTXs it issues tickets for: curl in TLS 1.2 (SSL_OP_NO_TICKET, session IDs
// only) gets full handshakes there, and resumes from the cache where KeysvcTickets is off.
TEST(ApacheModule, ApacheSessionCacheIsOffWhereKeysvcIssuesTickets) {
  const std::string toml = write_keysvc_toml("apache-keysvc.toml", {});
  publish(toml);
  for (const bool keysvc_on : {true, false}) {
    SCOPED_TRACE(keysvc_on ? "KeysvcTickets on" : "KeysvcTickets off");
    const std::string dir = token_subdir(keysvc_on ? "httpd-scache-on" : "httpd-scache-off");
    ApacheOptions o = keysvc_apache(1, toml);
    o.main += std::string("LoadModule socache_shmcb_module ") + kApacheModules + "/mod_socache_shmcb.so\n" +
              "SSLSessionCache shmcb:" + dir + "/scache(512000)\n";
    if (!keysvc_on) o.vhost = "    KeysvcTickets off\n";
    ApacheInstance httpd(dir, o);
    std::string detail;
    const auto answers = curl_requests(httpd.port(), TlsVersion::kTls12, localhost_cert().cert, 4, detail);
    ASSERT_EQ(answers.size(), 4u) << detail;
    int resumed = 0;
    for (const Answer& a : answers) resumed += a.ok && a.reused;
    const std::string notice = "mod_ssl's session cache (SSLSessionCache) is off in server";
    if (keysvc_on) {
      EXPECT_EQ(resumed, 0) << "a session ID resumed past keysvc\n" << detail;
      EXPECT_NE(httpd.error_log().find(notice), std::string::npos) << httpd.error_log();
    } else {
      EXPECT_EQ(resumed, 3) << "the control: mod_ssl's cache resumes session IDs\n" << detail;
      EXPECT_EQ(httpd.error_log().find(notice), std::string::npos) << httpd.error_log();
    }
    print_figure(std::string("SSLSessionCache, ") + (keysvc_on ? "KeysvcTickets on" : "KeysvcTickets off") +
                 ": TLS 1.2 curl " + std::to_string(resumed) + "/3 resumed by session ID");
    EXPECT_EQ(httpd.stop(), 0);
  }
}

// httpd keeps its environment for the children: the fault module's variables reach them.
TEST(ApacheModule, ApacheStaysUpWhenTheHsmFailsAndResumesWhenItReturns) {
  FaultControl faults = worker_faults();
  const std::string toml = write_faultmod_toml("faulty.toml");
  publish(toml);
  ApacheInstance httpd(token_subdir("httpd"), keysvc_apache(2, toml));
  stays_up_when_the_hsm_fails(httpd, faults);
}

TEST(ApacheModule, ApacheStartsWhileTheHsmIsDownAndTurnsTicketsOnWhenItReturns) {
  FaultControl faults = worker_faults();
  const std::string toml = write_faultmod_toml("faulty.toml");
  publish(toml);
  faults.set("C_OpenSession CKR_TOKEN_NOT_PRESENT\n");
  ApacheInstance httpd(token_subdir("httpd"), keysvc_apache(2, toml));
  turns_tickets_on_when_the_hsm_returns(httpd, faults);
}

}  // namespace
