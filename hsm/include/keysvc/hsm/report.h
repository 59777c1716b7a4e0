// Where the hsm layer says the few things that are not the error of a call: a PIN the
// token refused and that will not be tried again (login_policy.h), secure memory the
// kernel would not lock (secure_memory.h). One line each, never a PIN or key byte.
//
// The hsm layer has no logger of its own (dependencies point one way: keysvc uses hsm):
// by default a line goes to stderr as "keysvc hsm: LINE"; keysvc routes it to its log
// (keysvc/src/log.cc installs a sink when keysvc is linked in).
#pragma once

#include <string_view>

namespace keysvc::hsm {

enum class ReportLevel { kWarning, kError };

using ReportSink = void (*)(ReportLevel level, std::string_view line);

// Replaces the sink (nullptr: back to stderr). Thread-safe.
void set_report_sink(ReportSink sink) noexcept;

// Hands one line to the sink. Never throws.
void report(ReportLevel level, std::string_view line) noexcept;

}  // namespace keysvc::hsm
