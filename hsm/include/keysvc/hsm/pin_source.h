// Where a PIN comes from. keysvc never takes a PIN on the command line or in a config
// file value; it names a source instead:
//   file:PATH   the PIN is the file's content, trailing newline(s) stripped
//   env:NAME    the PIN is the value of environment variable NAME
// A PKCS#11 URI may also carry pin-source (same syntax, or a bare path as RFC 7512
// allows) or pin-value; see token_uri.h.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "keysvc/hsm/secret.h"

namespace keysvc::hsm {

class PinSource {
 public:
  // Parses "file:PATH" or "env:NAME". A bare absolute path is taken as file:PATH
  // (RFC 7512 pin-source). Throws ConfigError on anything else; the message names the
  // source, never a PIN.
  static PinSource parse(std::string_view spec);
  // A PIN given literally (RFC 7512 pin-value). Prefer file: or env: in production.
  static PinSource literal(SecretString pin);

  // Reads the PIN now. Throws ConfigError if the file or variable is missing or empty.
  SecretString read() const;

  // For messages: "file:/path" or "env:NAME" or "pin-value"; never the PIN.
  std::string describe() const;

 private:
  enum class Kind { kFile, kEnv, kLiteral };
  Kind kind_ = Kind::kEnv;
  std::string where_;   // path or variable name
  std::shared_ptr<const SecretString> literal_;  // only for kLiteral
};

}  // namespace keysvc::hsm
