// A server's own private key held in a PKCS#11 token, as an OpenSSL EVP_PKEY (through
// libp11's PKCS11_get_private_key), for SSL_CTX_use_PrivateKey.
//
//   auto key = keysvc::openssl::TokenPrivateKey::open(
//       "pkcs11:token=keysvc;object=tls-server;type=private", {.module = "/usr/lib/softhsm/libsofthsm2.so",
//                                                             .pin = PinSource::parse("file:/etc/keysvc/pin")});
//   SSL_CTX_use_PrivateKey(ctx, key.pkey());
//
// Sharing the module with keysvc's ticket sessions in one process. A PKCS#11 module
// has one state per process, so whoever calls C_Finalize, C_Logout or
// C_CloseAllSessions ends every other user's sessions or login. libp11 does all three
// (PKCS11_CTX_unload, PKCS11_logout, and C_CloseAllSessions when its last reference to
// a slot goes). Hence:
//   - one libp11 context per module path per process, loaded on first use and never
//     unloaded, its slot list never released (like hsm::Module);
//   - the login is keysvc's (hsm::Session::login with a PinSource, PIN wiped at once):
//     libp11 never sees the PIN (it would keep a copy for the life of the slot) and
//     never logs in or out itself; its sessions share the application's login;
//   - each TokenPrivateKey keeps one keysvc session open, so the login outlives
//     keysvc's ticket session pool being closed and reopened.
// If some other component in the process may still finalize the module (an OpenSSL
// pkcs11 engine that is unloaded, say), load p11-kit-proxy.so in every user instead:
// it reference-counts C_Initialize/C_Finalize (logout remains shared).
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "keysvc/config.h"
#include "keysvc/hsm/pin_source.h"

namespace keysvc::openssl {

// Used when the key's URI does not say it itself.
struct TokenKeyDefaults {
  std::string module;                // PKCS#11 module path (the URI's module-path wins)
  std::optional<hsm::PinSource> pin;  // user PIN source (the URI's pin-source / pin-value win)
};

// The module and PIN source of a keysvc config's [hsm] (hsm.pin, else the token URI's
// pin-source / pin-value): for a server key on the ticket token, the usual case.
// Throws hsm::ConfigError for a malformed PIN source or token URI.
TokenKeyDefaults token_key_defaults(const Config& config);

// "pkcs11:token=...;object=LABEL;type=private": the URI of the private key labelled
// `label` on the token `token_uri` selects (its query, e.g. a pin-value, is dropped).
// Throws hsm::ConfigError for a malformed token URI.
std::string private_key_uri(std::string_view token_uri, const std::string& label);

class TokenPrivateKey {
 public:
  // Finds the one private key matching `uri` (RFC 7512: token attributes to pick the
  // token, object= and/or id= to pick the key, optional type=private) and logs the
  // user in if needed. Throws hsm::ConfigError for a malformed URI, no module or PIN
  // source, no or several matching tokens or keys, and hsm::Pkcs11Error for a refused
  // PIN or a failing token. Messages never contain a pin-value.
  static TokenPrivateKey open(std::string_view uri, const TokenKeyDefaults& defaults = {});

  TokenPrivateKey(TokenPrivateKey&&) noexcept;
  TokenPrivateKey& operator=(TokenPrivateKey&&) noexcept;
  ~TokenPrivateKey();

  // The key; owned by this object (EVP_PKEY_up_ref to keep it longer). Signing with
  // it runs C_Sign in the token.
  EVP_PKEY* pkey() const noexcept;
  // "EC P-256" or "RSA 2048", for logs.
  std::string describe_type() const;
  // The URI as given, without any pin-value, for messages.
  const std::string& uri() const noexcept;

 private:
  struct Impl;
  explicit TokenPrivateKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True if `text` is a PKCS#11 URI (starts with "pkcs11:") rather than a file name.
bool is_pkcs11_uri(std::string_view text) noexcept;

}  // namespace keysvc::openssl
