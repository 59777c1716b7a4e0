#include "fault_control.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace keysvc::test {

namespace {
constexpr char kSoftHsm[] = "/usr/lib/softhsm/libsofthsm2.so";
}

FaultControl::FaultControl(const std::string& dir) : control_(dir + "/faults.conf"), stats_(dir + "/faults.stats") {
  std::filesystem::create_directories(dir);
  clear();
}

std::string FaultControl::module_path() { return KEYSVC_FAULTMOD_PATH; }

void FaultControl::export_env() const {
  ::setenv("KEYSVC_FAULTMOD_TARGET", kSoftHsm, 1);
  ::setenv("KEYSVC_FAULTMOD_CONTROL", control_.c_str(), 1);
  ::setenv("KEYSVC_FAULTMOD_STATS", stats_.c_str(), 1);
}

void FaultControl::set(const std::string& rules) const {
  const std::string tmp = control_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << rules;
    out.close();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), control_.c_str()) != 0) throw std::runtime_error("cannot rename " + tmp);
}

FaultStats FaultControl::stats() const {
  FaultStats s;
  std::ifstream in(stats_);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "injected") {
      words >> s.injected;
    } else if (kind == "errors") {
      words >> s.errors;
    } else if (kind == "calls") {
      std::string function;
      std::uint64_t n = 0;
      words >> function >> n;
      s.calls[function] = n;
    } else if (kind == "rule") {
      // "rule FUNCTION ACTION [ARG] N": the count is the last word.
      const std::string rest = line.substr(5);
      const auto space = rest.rfind(' ');
      if (space != std::string::npos) s.by_rule[rest.substr(0, space)] = std::stoull(rest.substr(space + 1));
    }
  }
  return s;
}

}  // namespace keysvc::test
