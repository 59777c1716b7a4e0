// keysvc's metrics in Prometheus' data model (prometheus-cpp MetricFamily): the mapping
// from keysvc::MetricsSnapshot (keysvc/metrics.h) and the OpenSSL adapter's callback
// counters to metric names and labels. docs/METRICS.md lists every family.
//
//   keysvc_tickets_total{key,outcome}            per key name (32 hex digits; "other" for
//                                                 the overflow of unknown names), usage.h
//   keysvc_service_<counter>_total                ServiceCounters, one family per field
//   keysvc_tls_tickets_total{event}               TicketCallbackCounters of one SSL_CTX
//   keysvc_hsm_call_seconds{function}             histogram of PKCS#11 call latency
//   keysvc_hsm_errors_total{function,rv}          failed PKCS#11 calls by CKR_* name
//   keysvc_generations, keysvc_hsm_sessions_open, keysvc_epoch_keys,
//   keysvc_encrypt_key_info{key}                  gauges
#pragma once

#include <prometheus/metric_family.h>

#include <string>
#include <vector>

#include "keysvc/metrics.h"
#include "keysvc/openssl/ticket_adapter.h"

namespace keysvc::prometheus {

// The families for `m`, plus keysvc_tls_tickets_total if `tls` is given. Every family of
// keysvc is present even when its counters are zero, so rates start from zero.
std::vector<::prometheus::MetricFamily> to_families(const MetricsSnapshot& m,
                                                    const openssl::TicketCallbackCounters* tls = nullptr);

// Prometheus' text exposition format (version 0.0.4) of `families`: what /metrics serves,
// for servers that answer scrapes with their own HTTP stack.
std::string to_text(const std::vector<::prometheus::MetricFamily>& families);

}  // namespace keysvc::prometheus
