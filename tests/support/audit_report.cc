#include "audit_report.h"

#include <regex>

namespace keysvc::test {

long long audit_report_field(const std::string& report, const std::string& name, const std::string& field) {
  auto at = report.find("\"name\": \"" + name + "\"");
  if (at == std::string::npos) return -1;
  auto end = report.find("\"rejected\"", at);
  end = report.find('}', end);
  std::string block = report.substr(at, end - at);
  std::smatch m;
  if (!std::regex_search(block, m, std::regex("\"" + field + "\": (\\d+)"))) return -1;
  return std::stoll(m[1]);
}

}  // namespace keysvc::test
