#include "keysvc/prometheus/metric_families.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "metrics_scrape.h"

namespace keysvc::prometheus {
namespace {

using test::parse_exposition;
using test::sample;

// A snapshot with one of everything, by hand.
MetricsSnapshot example() {
  MetricsSnapshot m;
  m.service.issued = 11;
  m.service.issued_from_pool = 4;
  m.service.opened = 5;
  m.service.hsm_calls = 24;
  m.service.unknown_key = 2;
  m.service.epoch_keys_derived = 6;
  KeyUsage generation;
  generation.name.fill(0x01);
  generation.counters[static_cast<std::size_t>(TicketOutcome::kIssued)] = 11;
  generation.counters[static_cast<std::size_t>(TicketOutcome::kResumed)] = 5;
  generation.counters[static_cast<std::size_t>(TicketOutcome::kBadEpoch)] = 2;
  KeyUsage overflow;
  overflow.kind = KeyUsage::Kind::kOverflow;
  overflow.counters[static_cast<std::size_t>(TicketOutcome::kUnknownKey)] = 2;
  m.usage.keys = {overflow, generation};
  hsm::CallSnapshot sign{.call = hsm::Call::kSign, .count = 3, .total_ns = 1'500'000};
  sign.buckets[3] = 1;                          // <= 10 us
  sign.buckets[5] = 1;                          // <= 50 us
  sign.buckets[hsm::kLatencyBuckets - 1] = 1;   // > 2.5 s
  sign.errors = {{CKR_DEVICE_ERROR, 1}};
  m.hsm_calls = {sign};
  m.generations = 2;
  m.hsm_sessions = 3;
  m.epoch_keys = 4;
  m.encrypt_key = generation.name;
  return m;
}

const std::string kKey = "01010101010101010101010101010101";

TEST(MetricFamilies, TextHasEveryCounterUnderItsName) {
  openssl::TicketCallbackCounters tls;
  tls.issued = 11;
  tls.resumed = 5;
  tls.renewed = 1;
  tls.rejected_bad_epoch = 2;
  tls.over_cap = 7;
  const std::string text = to_text(to_families(example(), &tls));
  const auto s = parse_exposition(text);

  EXPECT_EQ(sample(s, "keysvc_tickets_total{key=\"" + kKey + "\",outcome=\"issued\"}"), 11);
  EXPECT_EQ(sample(s, "keysvc_tickets_total{key=\"" + kKey + "\",outcome=\"resumed\"}"), 5);
  EXPECT_EQ(sample(s, "keysvc_tickets_total{key=\"" + kKey + "\",outcome=\"mac_failure\"}"), 0);
  EXPECT_EQ(sample(s, R"(keysvc_tickets_total{key="other",outcome="unknown_key"})"), 2);
  EXPECT_EQ(sample(s, "keysvc_service_issued_total"), 11);
  EXPECT_EQ(sample(s, "keysvc_service_issued_from_pool_total"), 4);
  EXPECT_EQ(sample(s, "keysvc_service_opened_total"), 5);
  EXPECT_EQ(sample(s, "keysvc_service_hsm_sign_calls_total"), 24);
  EXPECT_EQ(sample(s, "keysvc_service_unknown_key_total"), 2);
  EXPECT_EQ(sample(s, "keysvc_service_refreshes_total"), 0);
  EXPECT_EQ(sample(s, "keysvc_service_epoch_keys_derived_total"), 6);
  EXPECT_EQ(sample(s, "keysvc_tickets_total{key=\"" + kKey + "\",outcome=\"bad_epoch\"}"), 2);
  EXPECT_EQ(sample(s, R"(keysvc_tls_tickets_total{event="rejected_bad_epoch"})"), 2);
  EXPECT_EQ(sample(s, R"(keysvc_tls_tickets_total{event="over_cap"})"), 7);
  EXPECT_EQ(sample(s, "keysvc_epoch_keys"), 4);
  EXPECT_EQ(sample(s, R"(keysvc_tls_tickets_total{event="issued"})"), 11);
  EXPECT_EQ(sample(s, R"(keysvc_tls_tickets_total{event="renewed"})"), 1);
  EXPECT_EQ(sample(s, R"(keysvc_tls_tickets_total{event="pushed"})"), 0);
  EXPECT_EQ(sample(s, R"(keysvc_hsm_errors_total{function="C_Sign",rv="CKR_DEVICE_ERROR"})"), 1);
  EXPECT_EQ(sample(s, "keysvc_generations"), 2);
  EXPECT_EQ(sample(s, "keysvc_hsm_sessions_open"), 3);
  EXPECT_EQ(sample(s, "keysvc_encrypt_key_info{key=\"" + kKey + "\"}"), 1);
  for (const char* type : {"# TYPE keysvc_tickets_total counter", "# TYPE keysvc_hsm_call_seconds histogram",
                           "# TYPE keysvc_generations gauge", "# HELP keysvc_service_issued_total ",
                           "# TYPE keysvc_epoch_keys gauge", "# TYPE keysvc_service_epoch_keys_derived_total counter"})
    EXPECT_NE(text.find(type), std::string::npos) << type << "\n" << text;
}

TEST(MetricFamilies, LatencyHistogramIsCumulativeInSeconds) {
  const auto s = parse_exposition(to_text(to_families(example())));
  const std::string b = R"(keysvc_hsm_call_seconds_bucket{function="C_Sign",le=")";
  EXPECT_EQ(sample(s, b + R"(1e-06"})"), 0);
  EXPECT_EQ(sample(s, b + R"(1e-05"})"), 1);
  EXPECT_EQ(sample(s, b + R"(2.5e-05"})"), 1);
  EXPECT_EQ(sample(s, b + R"(5e-05"})"), 2);
  EXPECT_EQ(sample(s, b + R"(2.5"})"), 2);
  EXPECT_EQ(sample(s, b + R"(+Inf"})"), 3);
  EXPECT_EQ(sample(s, R"(keysvc_hsm_call_seconds_count{function="C_Sign"})"), 3);
  EXPECT_DOUBLE_EQ(sample(s, R"(keysvc_hsm_call_seconds_sum{function="C_Sign"})"), 0.0015);
  // Functions never called have no series.
  EXPECT_EQ(sample(s, R"(keysvc_hsm_call_seconds_count{function="C_SignInit"})"), -1);
}

TEST(MetricFamilies, WithoutTlsCountersOrEncryptKeyThoseSeriesAreAbsent) {
  MetricsSnapshot m = example();
  m.encrypt_key.reset();
  const std::string text = to_text(to_families(m));
  EXPECT_EQ(text.find("keysvc_tls_tickets_total"), std::string::npos) << text;
  EXPECT_EQ(text.find("keysvc_encrypt_key_info{"), std::string::npos) << text;
  // An empty snapshot still has every keysvc family, so rates start from zero.
  const auto empty = parse_exposition(to_text(to_families(MetricsSnapshot{})));
  EXPECT_EQ(sample(empty, "keysvc_service_issued_total"), 0);
  EXPECT_EQ(sample(empty, "keysvc_generations"), 0);
  EXPECT_EQ(sample(empty, "keysvc_epoch_keys"), 0);
  EXPECT_EQ(sample(empty, "keysvc_service_epoch_keys_derived_total"), 0);
}

}  // namespace
}  // namespace keysvc::prometheus
