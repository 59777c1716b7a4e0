#include "keysvc/prometheus/collector.h"

#include "keysvc/metrics.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/prometheus/metric_families.h"

namespace keysvc::prometheus {

Collector::Collector(std::shared_ptr<TicketKeyService> service, SSL_CTX* ctx) : service_(std::move(service)), ctx_(ctx) {
  if (ctx_ != nullptr) SSL_CTX_up_ref(ctx_);
}

Collector::~Collector() { SSL_CTX_free(ctx_); }

std::vector<::prometheus::MetricFamily> Collector::Collect() const {
  const MetricsSnapshot m = read_metrics(*service_);
  if (ctx_ == nullptr) return to_families(m);
  const openssl::TicketCallbackCounters tls = openssl::counters(ctx_);
  return to_families(m, &tls);
}

}  // namespace keysvc::prometheus
