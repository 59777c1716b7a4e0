#include "server_key.h"

#include "keysvc/hsm/token_uri.h"
#include "ossl.h"

namespace tls_server {

namespace {

namespace hsm = keysvc::hsm;

std::optional<hsm::PinSource> config_pin(const keysvc::Config& config) {
  if (!config.hsm.pin_source.empty()) return hsm::PinSource::parse(config.hsm.pin_source);
  hsm::TokenUri uri = hsm::TokenUri::parse(config.hsm.token_uri);
  if (auto source = uri.pin_source()) return hsm::PinSource::parse(*source);
  if (auto value = uri.pin_value()) return hsm::PinSource::literal(std::move(*value));
  return std::nullopt;
}

}  // namespace

ServerKey ServerKey::load(const std::string& key, const std::string& pin_source, const keysvc::Config* config) {
  ServerKey k;
  if (!keysvc::openssl::is_pkcs11_uri(key)) {
    if (!pin_source.empty()) throw hsm::ConfigError("--key-pin is only for a key in a token (--key pkcs11:...)");
    k.path_ = key;
    return k;
  }
  keysvc::openssl::TokenKeyDefaults defaults;
  if (config != nullptr) defaults.module = config->hsm.module;
  if (!pin_source.empty()) {
    defaults.pin = hsm::PinSource::parse(pin_source);
  } else if (config != nullptr) {
    defaults.pin = config_pin(*config);
  }
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
