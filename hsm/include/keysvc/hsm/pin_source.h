// Where a PIN comes from. keysvc never takes a PIN on the command line or in a config
// file value; it names a source instead:
//   file:PATH   the PIN is the file's content, trailing newline(s) stripped; read again
//               at every login (so a rotated PIN file takes effect without a restart),
//               with open()/read() straight into secure memory (secure_memory.h)
//   env:NAME    the PIN is the value of environment variable NAME. It is read once and
//               then removed from the environment: its characters are overwritten in
//               place (so /proc/PID/environ and a core dump no longer show it) and the
//               variable unset, so child processes never inherit it. The process keeps
//               the PIN in secure memory; a new PIN needs a restart with the variable set
//               again (or setenv() in the process: a variable present at read() time is
//               read, and removed, again).
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

  // What tells one state of the source from another without its content: for file:,
  // the file's device, inode, size, modification and change times (a rewrite, a rename
  // over it or a touch changes it); for env: and pin-value, always the same.
  struct Stamp {
    unsigned long long device = 0, inode = 0, size = 0;
    long long modified_ns = 0, changed_ns = 0;
    bool operator==(const Stamp&) const = default;
  };

  // Reads the PIN now (and, if `stamp` is given, the state it was read in). Throws
  // ConfigError if the file or variable is missing or empty, if the file is not a
  // regular file or the PIN is longer than kMaxSecretBytes.
  SecretString read(Stamp* stamp = nullptr) const;

  // For messages: "file:/path" or "env:NAME" or "pin-value"; never the PIN.
  std::string describe() const;

 private:
  enum class Kind { kFile, kEnv, kLiteral };
  Kind kind_ = Kind::kEnv;
  std::string where_;   // path or variable name
  std::shared_ptr<const SecretString> literal_;  // only for kLiteral
};

}  // namespace keysvc::hsm
