#include "keysvc/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace keysvc {

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
