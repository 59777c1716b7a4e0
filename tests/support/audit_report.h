// Reading `keysvcctl audit report --json` output in tests (nlohmann-json).
#pragma once

#include <string>

namespace keysvc::test {

// The number `field` ("issued", "resumed", "unknown_key", ...) of the key named `name`
// (32 hex digits) in a `keysvcctl audit report --json` text; -1 if the text is not JSON
// or the key or the field is not there. Rejection outcomes are read from the key's
// "rejected" object.
long long audit_report_field(const std::string& report, const std::string& name, const std::string& field);

}  // namespace keysvc::test
