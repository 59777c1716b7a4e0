#include "server_key.h"

#include "keysvc/hsm/error.h"
#include "keysvc/openssl/ossl.h"

namespace tls_server {

namespace hsm = keysvc::hsm;
using keysvc::openssl::OpenSslError;

std::string check_key_argument(const std::string& key) {
  if (keysvc::openssl::is_pkcs11_uri(key) && key.find("pin-value") != std::string::npos)
    return "a pin-value would put the PIN in argv: use pin-source=file:PATH in the URI, or --key-pin";
  return {};
}

ServerKey ServerKey::load(const std::string& key, const std::string& pin_source, const keysvc::Config* config) {
  if (auto problem = check_key_argument(key); !problem.empty()) throw hsm::ConfigError("--key: " + problem);
  ServerKey k;
  if (!keysvc::openssl::is_pkcs11_uri(key)) {
    if (!pin_source.empty()) throw hsm::ConfigError("--key-pin is only for a key in a token (--key pkcs11:...)");
    k.path_ = key;
    return k;
  }
  keysvc::openssl::TokenKeyDefaults defaults;
  if (config != nullptr) defaults = keysvc::openssl::token_key_defaults(*config);
  if (!pin_source.empty()) defaults.pin = hsm::PinSource::parse(pin_source);
  k.token_key_ = keysvc::openssl::TokenPrivateKey::open(key, defaults);
  k.path_ = k.token_key_->uri();
  return k;
}

void ServerKey::use_in(SSL_CTX* ctx) const {
  if (token_key_) {
    if (SSL_CTX_use_PrivateKey(ctx, token_key_->pkey()) != 1) throw OpenSslError("cannot use the token key " + path_);
  } else if (SSL_CTX_use_PrivateKey_file(ctx, path_.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw OpenSslError("cannot load key " + path_);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) throw OpenSslError("key " + path_ + " does not match the certificate");
}

std::string ServerKey::describe() const {
  if (token_key_) return "token key " + path_ + " (" + token_key_->describe_type() + ")";
  return "file " + path_;
}

}  // namespace tls_server
