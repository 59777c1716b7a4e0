// Fuzz target: the configuration parser (Config::parse, TOML via toml++) and the
// duration syntax. Bad input must end in one ConfigError; anything else escaping (another
// exception type, a crash, UB) is a finding.
#include <cstdint>
#include <string>
#include <string_view>

#include "keysvc/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    keysvc::Config c = keysvc::Config::parse(text, "fuzz.toml", "/nonexistent/keysvc");
    // A config that parses is internally consistent (config.h's checks).
    if (c.hsm.module.empty() || c.hsm.token_uri.empty()) __builtin_trap();
  } catch (const keysvc::ConfigError&) {
  }
  // The first line alone as a duration ("90", "15m", ...).
  try {
    (void)keysvc::parse_duration(text.substr(0, text.find('\n')));
  } catch (const keysvc::ConfigError&) {
  }
  return 0;
}
