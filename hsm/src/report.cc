#include "keysvc/hsm/report.h"

#include <atomic>
#include <cstdio>

namespace keysvc::hsm {

namespace {
std::atomic<ReportSink> g_sink{nullptr};
}  // namespace

void set_report_sink(ReportSink sink) noexcept { g_sink.store(sink, std::memory_order_release); }

void report(ReportLevel level, std::string_view line) noexcept {
  if (ReportSink sink = g_sink.load(std::memory_order_acquire)) {
    try {
      sink(level, line);
      return;
    } catch (...) {
      // fall back to stderr: the line must not be lost
    }
  }
  std::fprintf(stderr, "keysvc hsm: %s: %.*s\n", level == ReportLevel::kError ? "error" : "warning",
               static_cast<int>(line.size()), line.data());
}

}  // namespace keysvc::hsm
