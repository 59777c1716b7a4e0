// The server's own private key: a PEM file, or a key held in a PKCS#11 token and named
// by a URI (keysvc::openssl::TokenPrivateKey, through libp11).
#pragma once

#include <openssl/ssl.h>

#include <optional>
#include <string>

#include "keysvc/config.h"
#include "keysvc/openssl/token_private_key.h"

namespace tls_server {

// What is wrong with --key's value, or "" if nothing: a pkcs11: URI must not carry a
// pin-value, which would put the PIN in argv (and `ps`). The message never repeats the
// value.
std::string check_key_argument(const std::string& key);

class ServerKey {
 public:
  // `key` is a file path, or a pkcs11: URI. For a URI the PIN source is, in order: the
  // URI's pin-source, `pin_source` (--key-pin: file:PATH or env:NAME), the
  // keysvc config's hsm.pin (the ticket token's: the usual case is one token for both);
  // the module is the URI's module-path or the config's hsm.module. Throws
  // keysvc::hsm::Error (one line) if the key cannot be opened.
  static ServerKey load(const std::string& key, const std::string& pin_source, const keysvc::Config* config);

  bool in_token() const noexcept { return token_key_.has_value(); }
  // Puts the key on `ctx` (after its certificate) and checks that they match. Throws
  // std::runtime_error.
  void use_in(SSL_CTX* ctx) const;
  // "file /path" or "token key pkcs11:... (EC P-256)", for the log.
  std::string describe() const;

 private:
  std::string path_;  // the file or the URI (without pin-value)
  std::optional<keysvc::openssl::TokenPrivateKey> token_key_;
};

}  // namespace tls_server
