// The bytes of audit records (audit_log.h): JSON strings and each event's fields, written
// here byte for byte so that the hash chain is over exactly what is in the file.
#pragma once

#include <string>
#include <string_view>

#include "audit_open.h"
#include "keysvc/audit_log.h"

namespace keysvc::audit::detail {

// A JSON string: quotes, backslash, control characters and every byte >= 0x7f escaped,
// so each record is one line of ASCII whatever a path or label holds.
std::string quote(std::string_view s);

// An event's name and its fields (",\"k\":v..."), or an empty name to drop it.
struct Render {
  std::string event;
  std::string fields;
};
Render render(const Event& event);

// chain_start's "found" and "unanchored" members (",\"found\":{...}").
std::string found_field(const Found& f);
std::string unanchored_field(const Unanchored& u);

}  // namespace keysvc::audit::detail
