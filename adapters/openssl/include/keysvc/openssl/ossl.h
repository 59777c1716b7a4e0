// Owning pointers and an error type for the OpenSSL objects keysvc's adapter and
// programs (and tests) create (SSL_CTX, SSL, SSL_SESSION, EVP_PKEY, X509, BIO...): one home for them, so each
// user does not write its own deleters.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <memory>
#include <stdexcept>
#include <string>

namespace keysvc::openssl {

// A unique_ptr deleter calling OpenSSL's `Free` function.
template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    Free(p);
  }
};

using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<&SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<&SSL_free>>;
using SslSessionPtr = std::unique_ptr<SSL_SESSION, Deleter<&SSL_SESSION_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<&EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<&X509_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, Deleter<&X509_EXTENSION_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<&BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<&BN_free>>;

// Drains OpenSSL's error queue of this thread and returns its last entry as text
// ("unknown error" if the queue was empty).
inline std::string take_openssl_error() {
  unsigned long last = 0;
  while (unsigned long e = ERR_get_error()) last = e;
  if (last == 0) return "unknown error";
  std::array<char, 256> buf{};
  ERR_error_string_n(last, buf.data(), buf.size());
  return buf.data();
}

// std::runtime_error("what: <last OpenSSL error>"), draining the queue.
class OpenSslError : public std::runtime_error {
 public:
  explicit OpenSslError(const std::string& what) : std::runtime_error(what + ": " + take_openssl_error()) {}
};

}  // namespace keysvc::openssl
