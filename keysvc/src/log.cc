#include "keysvc/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include "keysvc/hsm/report.h"

namespace keysvc {

namespace {
void log_hsm_report(hsm::ReportLevel level, std::string_view line) {
  logger()->log(level == hsm::ReportLevel::kError ? spdlog::level::err : spdlog::level::warn, "{}", line);
}
// The hsm layer's reports (a refused PIN, unlockable secure memory) go to keysvc's log
// from the start, in every program that links keysvc.
[[maybe_unused]] const bool g_hsm_reports_logged = (hsm::set_report_sink(&log_hsm_report), true);
}  // namespace

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> log = [] {
    auto existing = spdlog::get("keysvc");
    if (existing) return existing;
    auto l = spdlog::stderr_logger_mt("keysvc");
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %n[%P] %l: %v", spdlog::pattern_time_type::utc);
    return l;
  }();
  return log;
}

void set_log_level(const std::string& level) { logger()->set_level(spdlog::level::from_str(level)); }

}  // namespace keysvc
