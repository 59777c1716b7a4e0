// keysvc's operational log (spdlog, to stderr by default). Never given key bytes,
// IVs or PINs: key names (public: they lead every ticket) are the most it names.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace keysvc {

// The "keysvc" logger; created on first use, writing to stderr.
std::shared_ptr<spdlog::logger> logger();
// Sets the level by name (trace, debug, info, warn, error, off).
void set_log_level(const std::string& level);

}  // namespace keysvc
