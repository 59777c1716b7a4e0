#include "metrics_scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "process.h"

namespace keysvc::test {

std::string scrape_metrics(int port) {
  RunResult r = run({"curl", "--silent", "--show-error", "--fail", "--max-time", "10",
                     "http://127.0.0.1:" + std::to_string(port) + "/metrics"},
                    "", std::chrono::seconds(15));
  if (r.exit_code != std::optional<int>(0)) throw std::runtime_error("curl failed: " + r.err);
  return r.out;
}

std::map<std::string, double> parse_exposition(const std::string& text) {
  std::map<std::string, double> samples;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.front() == '#') continue;
    const auto space = line.rfind(' ');
    if (space == std::string::npos) throw std::runtime_error("not a sample line: " + line);
    samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return samples;
}

double sample(const std::map<std::string, double>& samples, const std::string& series) {
  auto it = samples.find(series);
  return it == samples.end() ? -1 : it->second;
}

double delta(const std::map<std::string, double>& before, const std::map<std::string, double>& after,
             const std::string& series) {
  const double b = sample(before, series);
  return sample(after, series) - (b < 0 ? 0 : b);
}

BusyPort::BusyPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
  if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 1) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd_);
    throw std::runtime_error("cannot hold a port on 127.0.0.1: " + why);
  }
  address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

BusyPort::~BusyPort() { ::close(fd_); }

}  // namespace keysvc::test
