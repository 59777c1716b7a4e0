// keysvc's C API (keysvc_openssl.h, c_api.cc), as a web server module uses it: open a
// service from a config file, install it on an SSL_CTX, stop its background work.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "c_api_support.h"
#include "keysvc/openssl/keysvc_openssl.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc::openssl {
namespace {

using test::Handshake;
using test::TestToken;

// A TLS 1.3 full handshake with `server` gets a ticket, and the ticket resumes.
void expect_a_ticket_that_resumes(SSL_CTX* server) {
  auto client = test::make_client_ctx(TLS1_3_VERSION);
  Handshake h = test::handshake(server, client.get());
  ASSERT_TRUE(h.ok) << h.error;
  ASSERT_FALSE(h.tickets.empty());
  EXPECT_TRUE(test::handshake(server, client.get(), h.last()).reused);
}

TEST(TicketAdapterCApi, OpensInstallsAndResumes) {
  TestToken::get().clear();
  char err[256] = "";
  keysvc_service* svc = keysvc_service_open(TestToken::get().config_path().c_str(), err, sizeof err);
  ASSERT_NE(svc, nullptr) << err;
  auto server = test::make_server_ctx();
  ASSERT_EQ(keysvc_ssl_ctx_install(server.get(), svc, nullptr, nullptr, err, sizeof err), 1) << err;
  keysvc_service_free(svc);  // the SSL_CTX keeps the service alive
  expect_a_ticket_that_resumes(server.get());
}

// A web server worker at exit: keysvc_service_stop() ends the background thread (no more
// token scans, with rescans due every second) while the SSL_CTX, never freed, keeps the
// service and its tickets working.
TEST(TicketAdapterCApi, StopEndsTheBackgroundWorkAndTicketsGoOn) {
  TestToken::get().clear();
  Config config = test::strict(TestToken::get().config());
  config.rotation.refresh_interval = std::chrono::seconds(1);
  keysvc_service handle{TicketKeyService::open(config)};
  auto server = test::make_server_ctx();
  char err[256] = "";
  ASSERT_EQ(keysvc_ssl_ctx_install(server.get(), &handle, nullptr, nullptr, err, sizeof err), 1) << err;
  keysvc_service_stop(&handle);
  keysvc_service_stop(&handle);  // idempotent
  keysvc_service_stop(nullptr);
  const std::uint64_t scans = handle.service->counters().refreshes;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(handle.service->counters().refreshes, scans) << "a token scan after keysvc_service_stop";
  expect_a_ticket_that_resumes(server.get());
}

TEST(TicketAdapterCApi, BadConfigIsOneLineError) {
  char err[256] = "";
  EXPECT_EQ(keysvc_service_open("/nonexistent/keysvc.toml", err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("/nonexistent/keysvc.toml"), std::string::npos) << err;
  EXPECT_EQ(std::string(err).find('\n'), std::string::npos);
}

}  // namespace
}  // namespace keysvc::openssl
