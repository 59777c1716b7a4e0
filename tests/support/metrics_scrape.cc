#include "metrics_scrape.h"

#include <chrono>
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

}  // namespace keysvc::test
