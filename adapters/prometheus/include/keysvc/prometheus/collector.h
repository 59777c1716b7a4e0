// A prometheus-cpp Collectable that reads a TicketKeyService (and the ticket callback
// counters of the SSL_CTX it is installed on) at every scrape: register it with any
// prometheus::Exposer, or call Collect() and to_text() from your own endpoint.
//
// Reading costs no HSM call (keysvc::read_metrics), so scrapes never compete with
// handshakes for the token.
#pragma once

#include <openssl/ssl.h>
#include <prometheus/collectable.h>

#include <memory>
#include <vector>

#include "keysvc/ticket_key_service.h"

namespace keysvc::prometheus {

class Collector : public ::prometheus::Collectable {
 public:
  // `ctx`, if not null, is the SSL_CTX keysvc::openssl::install() was called on; the
  // collector holds a reference to it (SSL_CTX_up_ref) until it is destroyed.
  explicit Collector(std::shared_ptr<TicketKeyService> service, SSL_CTX* ctx = nullptr);
  ~Collector() override;
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  // The current metric families (metric_families.h). Thread-safe.
  std::vector<::prometheus::MetricFamily> Collect() const override;

 private:
  std::shared_ptr<TicketKeyService> service_;
  SSL_CTX* ctx_;
};

}  // namespace keysvc::prometheus
