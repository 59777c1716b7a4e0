// Reading Prometheus metrics in tests: a real scrape with curl, and the samples of the
// text exposition format by series. Also a busy port, for the endpoint's bind errors.
#pragma once

#include <map>
#include <string>

namespace keysvc::test {

// GET http://127.0.0.1:PORT/metrics with curl; the body. Throws std::runtime_error if
// curl fails or the answer is not HTTP 200.
std::string scrape_metrics(int port);

// Every sample of a text exposition: "name{label="value",...}" (exactly as printed) or
// "name" -> value. Comment lines (# HELP, # TYPE) are skipped.
std::map<std::string, double> parse_exposition(const std::string& text);

// parse_exposition(text)[series], or -1 if the series is absent.
double sample(const std::map<std::string, double>& samples, const std::string& series);

// How much `series` grew from `before` to `after` (a series absent before counts as 0;
// absent after gives a negative result).
double delta(const std::map<std::string, double>& before, const std::map<std::string, double>& after,
             const std::string& series);

// A port no one else can listen on: a socket listening on 127.0.0.1 and a free port until
// destroyed. Throws std::runtime_error if it cannot be set up.
class BusyPort {
 public:
  BusyPort();
  ~BusyPort();
  BusyPort(const BusyPort&) = delete;
  BusyPort& operator=(const BusyPort&) = delete;

  // "127.0.0.1:PORT".
  const std::string& address() const { return address_; }

 private:
  int fd_ = -1;
  std::string address_;
};

}  // namespace keysvc::test
