#include "keysvc/prometheus/exporter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "keysvc/listen_address.h"

namespace keysvc::prometheus {

namespace {

// civetweb reports any failure to start as "null context ... Possible problem binding to
// port": bind the address once more ourselves to name the actual reason.
std::string why_bind_fails(const std::string& address) {
  const auto colon = address.rfind(':');
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<std::uint16_t>(std::stoul(address.substr(colon + 1))));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sin.sin_addr) != 1) return "not an IPv4 address";
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::strerror(errno);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  std::string why = "the HTTP server did not start";
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin) != 0) why = std::strerror(errno);
  ::close(fd);
  return why;
}

}  // namespace

Exporter::Exporter(const std::string& address, std::shared_ptr<::prometheus::Collectable> collectable)
    : collectable_(std::move(collectable)) {
  const std::string fail = "cannot serve metrics on " + address + ": ";
  if (std::string problem = check_listen_address(address); !problem.empty()) throw std::runtime_error(fail + problem);
  try {
    exposer_ = std::make_unique<::prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception&) {
    throw std::runtime_error(fail + why_bind_fails(address));
  }
  exposer_->RegisterCollectable(collectable_);
  const auto ports = exposer_->GetListeningPorts();
  if (ports.empty()) throw std::runtime_error(fail + "no listening port");
  address_ = address.substr(0, address.rfind(':') + 1) + std::to_string(ports.front());
}

Exporter::~Exporter() = default;

}  // namespace keysvc::prometheus
