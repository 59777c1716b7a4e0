#include "audit_report.h"

#include <nlohmann/json.hpp>

namespace keysvc::test {

long long audit_report_field(const std::string& report, const std::string& name, const std::string& field) {
  const nlohmann::json j = nlohmann::json::parse(report, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("keys") || !j["keys"].is_array()) return -1;
  for (const auto& key : j["keys"]) {
    if (!key.is_object() || key.value("name", "") != name) continue;
    for (const auto* where : {&key, key.contains("rejected") ? &key["rejected"] : nullptr})
      if (where && where->is_object() && where->contains(field) && (*where)[field].is_number_integer())
        return (*where)[field].get<long long>();
    return -1;
  }
  return -1;
}

}  // namespace keysvc::test
