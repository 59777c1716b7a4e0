// An HTTP endpoint serving Prometheus metrics: GET http://ADDRESS/metrics answers with
// the text format of a Collectable (usually keysvc::prometheus::Collector), from
// prometheus-cpp's pull exposer (civetweb, two threads of its own). Other paths get 404.
//
//   auto collector = std::make_shared<keysvc::prometheus::Collector>(service, ssl_ctx);
//   keysvc::prometheus::Exporter exporter(config.metrics.listen, collector);
//
// Plain HTTP without authentication: bind it to loopback or a management network.
#pragma once

#include <memory>
#include <string>

namespace prometheus {
class Collectable;
class Exposer;
}  // namespace prometheus

namespace keysvc::prometheus {

class Exporter {
 public:
  // Starts serving `collectable` on `address`, a numeric IPv4 HOST:PORT (port 0: a free
  // port; see address()). Throws std::runtime_error with one line, "cannot serve
  // metrics on ADDRESS: why", if the address is malformed or cannot be bound.
  Exporter(const std::string& address, std::shared_ptr<::prometheus::Collectable> collectable);
  // Stops serving (waits for scrapes in progress).
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // "HOST:PORT" with the port actually bound.
  const std::string& address() const noexcept { return address_; }

 private:
  std::shared_ptr<::prometheus::Collectable> collectable_;  // the exposer keeps only a weak_ptr
  std::unique_ptr<::prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace keysvc::prometheus
