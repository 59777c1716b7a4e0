#include "keysvc/prometheus/collector.h"

#include <gtest/gtest.h>

#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/prometheus/metric_families.h"
#include "metrics_scrape.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc::prometheus {
namespace {

using test::delta;
using test::parse_exposition;
using test::sample;

std::shared_ptr<TicketKeyService> open_service() {
  test::TestToken::get().clear();
  return TicketKeyService::open(test::strict(test::TestToken::get().config()));  // issue pool off
}

TEST(Collector, ReadsTheServiceAndTheCallbacksAtEachCollect) {
  auto service = open_service();
  test::SslCtxPtr server = test::make_server_ctx();
  openssl::install(server.get(), service);
  auto collector = std::make_shared<Collector>(service, server.get());

  const auto before = parse_exposition(to_text(collector->Collect()));
  test::SslCtxPtr client = test::make_client_ctx(TLS1_3_VERSION);
  test::Handshake full = test::handshake(server.get(), client.get());
  ASSERT_TRUE(full.ok) << full.error;
  test::Handshake resumed = test::handshake(server.get(), client.get(), full.last());
  ASSERT_TRUE(resumed.ok && resumed.reused) << resumed.error;
  const auto after = parse_exposition(to_text(collector->Collect()));

  // Two tickets after the full handshake, one fresh after the resumption; two HMACs per
  // ticket issued or opened.
  EXPECT_EQ(delta(before, after, R"(keysvc_tls_tickets_total{event="issued"})"), 3);
  EXPECT_EQ(delta(before, after, R"(keysvc_tls_tickets_total{event="resumed"})"), 1);
  EXPECT_EQ(delta(before, after, "keysvc_service_issued_total"), 3);
  EXPECT_EQ(delta(before, after, R"(keysvc_hsm_call_seconds_count{function="C_Sign"})"), 2 * (3 + 1));
}

TEST(Collector, WithoutAnSslCtxHasNoCallbackCounters) {
  Collector collector(open_service());
  const std::string text = to_text(collector.Collect());
  EXPECT_EQ(text.find("keysvc_tls_tickets_total"), std::string::npos);
  EXPECT_NE(text.find("keysvc_service_issued_total 0"), std::string::npos) << text;
}

TEST(Collector, KeepsTheSslCtxAlive) {
  auto service = open_service();
  test::SslCtxPtr server = test::make_server_ctx();
  openssl::install(server.get(), service);
  Collector collector(service, server.get());
  server.reset();  // the collector's reference keeps it (ASan would catch a use after free)
  const auto s = parse_exposition(to_text(collector.Collect()));
  EXPECT_EQ(sample(s, R"(keysvc_tls_tickets_total{event="issued"})"), 0);
}

}  // namespace
}  // namespace keysvc::prometheus
