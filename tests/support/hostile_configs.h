// Bad configuration files for the command-line tools' hostile-input sweeps
// (tests/apps/keysvcctl_input_test.cc, tests/interop/tls_server_interop_test.cc): each
// one must give one error line, exit 1 or 2, and leave the token unchanged.
#pragma once

#include <string>
#include <vector>

namespace keysvc::test {

struct HostileConfig {
  std::string name;    // what is wrong, for messages
  std::string path;    // the file (or folder) to pass as --config
  std::string secret;  // a PIN-like value that must never be printed ("" if none)
  std::vector<std::pair<std::string, std::string>> env;  // variables to set ("" value: unset)
};

// Writes the bad configs for the test token (test_token.h) into `dir` and returns them:
// TOML errors, unknown keys, bad values and ranges, modules that are not PKCS#11 modules,
// malformed and object URIs, an absent token, wrong / missing / empty / literal PINs,
// binary garbage, an empty file and a folder.
std::vector<HostileConfig> write_hostile_configs(const std::string& dir);

}  // namespace keysvc::test
