#include "keysvc/prometheus/metric_families.h"

#include <prometheus/text_serializer.h>

#include <limits>
#include <sstream>
#include <utility>

#include "keysvc/hsm/error.h"
#include "keysvc/key_name.h"

namespace keysvc::prometheus {

namespace {

using ::prometheus::ClientMetric;
using ::prometheus::MetricFamily;
using ::prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void add_counter(MetricFamily& f, std::vector<ClientMetric::Label> labels, std::uint64_t value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = static_cast<double>(value);
  f.metric.push_back(std::move(m));
}

void add_gauge(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

// A family with one unlabelled counter.
MetricFamily counter(std::string name, std::string help, std::uint64_t value) {
  MetricFamily f = family(std::move(name), std::move(help), MetricType::Counter);
  add_counter(f, {}, value);
  return f;
}

// A family with one unlabelled gauge.
MetricFamily gauge(std::string name, std::string help, double value) {
  MetricFamily f = family(std::move(name), std::move(help), MetricType::Gauge);
  add_gauge(f, {}, value);
  return f;
}

void add_usage(std::vector<MetricFamily>& out, const UsageSnapshot& usage) {
  MetricFamily f = family("keysvc_tickets_total",
                          "Tickets per key name and outcome: issued, resumed, renewed (part of resumed), and "
                          "rejected by reason. key is the generation's name in hex; 'other' counts the unknown "
                          "names beyond the first 16.",
                          MetricType::Counter);
  for (const KeyUsage& k : usage.keys) {
    const std::string key = k.kind == KeyUsage::Kind::kOverflow ? std::string("other") : to_hex(k.name);
    for (std::size_t i = 0; i < kTicketOutcomeCount; ++i)
      add_counter(f, {{"key", key}, {"outcome", std::string(outcome_name(static_cast<TicketOutcome>(i)))}},
                  k.counters[i]);
  }
  out.push_back(std::move(f));
}

void add_service(std::vector<MetricFamily>& out, const ServiceCounters& s) {
  const std::pair<const char*, std::pair<const char*, std::uint64_t>> counters[] = {
      {"issued", {"Per-ticket keys handed out for new tickets.", s.issued}},
      {"issued_from_pool", {"Of issued: taken from the pre-derived issue pool (no HSM call on the handshake).",
                            s.issued_from_pool}},
      {"opened", {"Per-ticket keys derived for presented tickets.", s.opened}},
      {"unknown_key", {"Presented tickets whose key name is in no loaded generation.", s.unknown_key}},
      {"retired_key", {"Presented tickets under expired or revoked generations.", s.retired_key}},
      {"hsm_errors", {"Issue, open and refresh operations that failed in the token.", s.hsm_errors}},
      {"hsm_sign_calls", {"HMAC sign operations started in the token for tickets: 2 per strict derivation 1, "
                          "1 per strict derivation 2, 1 per epoch key.",
                          s.hsm_calls}},
      {"epoch_keys_derived", {"Epoch keys computed in the token (epoch tier: one HMAC per generation and epoch).",
                              s.epoch_keys_derived}},
      {"rescans", {"Token rescans triggered by unknown key names.", s.rescans}},
      {"refreshes", {"Token rescans (periodic and on demand).", s.refreshes}},
      {"module_restarts", {"PKCS#11 module restarts (C_Finalize + C_Initialize) after the HSM was gone.",
                           s.module_restarts}},
  };
  for (const auto& [name, what] : counters)
    out.push_back(counter(std::string("keysvc_service_") + name + "_total", what.first, what.second));
}

void add_tls(std::vector<MetricFamily>& out, const openssl::TicketCallbackCounters& c) {
  MetricFamily f = family("keysvc_tls_tickets_total",
                          "What OpenSSL's ticket callbacks did on the server's SSL_CTX, by event "
                          "(keysvc/openssl/ticket_adapter.h).",
                          MetricType::Counter);
  const std::pair<const char*, std::uint64_t> events[] = {
      {"issued", c.issued},
      {"issue_failed", c.issue_failed},
      {"resumed", c.resumed},
      {"renewed", c.renewed},
      {"unknown_key", c.unknown_key},
      {"retired_key", c.retired_key},
      {"hsm_error", c.hsm_error},
      {"rejected_bad_ticket", c.rejected_bad_ticket},
      {"rejected_unopened", c.rejected_unopened},
      {"rejected_too_old", c.rejected_too_old},
      {"rejected_bad_epoch", c.rejected_bad_epoch},
      {"over_cap", c.over_cap},
      {"empty_ticket", c.empty_ticket},
      {"pushed", c.pushed},
  };
  for (const auto& [event, value] : events) add_counter(f, {{"event", event}}, value);
  out.push_back(std::move(f));
}

void add_hsm(std::vector<MetricFamily>& out, const std::vector<hsm::CallSnapshot>& calls) {
  MetricFamily latency = family("keysvc_hsm_call_seconds",
                                "Latency of PKCS#11 calls by function, failed calls included.",
                                MetricType::Histogram);
  MetricFamily errors = family("keysvc_hsm_errors_total",
                               "PKCS#11 calls that returned anything but CKR_OK, by function and CKR_* name.",
                               MetricType::Counter);
  for (const hsm::CallSnapshot& c : calls) {
    const std::string function(hsm::call_name(c.call));
    ClientMetric m;
    m.label = {{"function", function}};
    m.histogram.sample_count = c.count;
    m.histogram.sample_sum = static_cast<double>(c.total_ns) / 1e9;
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < hsm::kLatencyBuckets; ++b) {
      cumulative += c.buckets[b];
      const double bound = b < hsm::kLatencyBoundsNs.size() ? static_cast<double>(hsm::kLatencyBoundsNs[b]) / 1e9
                                                            : std::numeric_limits<double>::infinity();
      m.histogram.bucket.push_back({cumulative, bound});
    }
    latency.metric.push_back(std::move(m));
    for (const auto& [rv, n] : c.errors) add_counter(errors, {{"function", function}, {"rv", hsm::rv_name(rv)}}, n);
  }
  out.push_back(std::move(latency));
  out.push_back(std::move(errors));
}

void add_gauges(std::vector<MetricFamily>& out, const MetricsSnapshot& m) {
  out.push_back(gauge("keysvc_generations", "Ticket key generations in the ring the service uses now.",
                      static_cast<double>(m.generations)));
  out.push_back(gauge("keysvc_generations_refused",
                      "Of those, generations refused because their keys or record are not what keysvc makes "
                      "(never used).",
                      static_cast<double>(m.refused_generations)));
  out.push_back(gauge("keysvc_hsm_sessions_open", "PKCS#11 sessions the service's pool has open.",
                      static_cast<double>(m.hsm_sessions)));
  out.push_back(gauge("keysvc_epoch_keys",
                      "Epoch keys this process holds in secure memory now (epoch tier; at most "
                      "tickets.lifetime / tickets.epoch + 2 per generation). Never their bytes.",
                      static_cast<double>(m.epoch_keys)));
  MetricFamily encrypt = family("keysvc_encrypt_key_info",
                                "1 for the generation new tickets are issued under (no series while there is none).",
                                MetricType::Gauge);
  if (m.encrypt_key) add_gauge(encrypt, {{"key", to_hex(*m.encrypt_key)}}, 1);
  out.push_back(std::move(encrypt));
}

}  // namespace

std::vector<MetricFamily> to_families(const MetricsSnapshot& m, const openssl::TicketCallbackCounters* tls) {
  std::vector<MetricFamily> out;
  add_usage(out, m.usage);
  add_service(out, m.service);
  if (tls != nullptr) add_tls(out, *tls);
  add_hsm(out, m.hsm_calls);
  add_gauges(out, m);
  return out;
}

std::string to_text(const std::vector<MetricFamily>& families) {
  std::ostringstream out;
  ::prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace keysvc::prometheus
