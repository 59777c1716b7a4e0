// Self-signed X.509 server certificates, for demos and tests: keysvc-tls-server's
// generated certificate and `keysvcctl server-key create`'s certificate for a key held
// in a token (signed by the token through TokenPrivateKey's EVP_PKEY).
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <string>
#include <vector>

namespace keysvc::openssl {

struct CertificateRequest {
  std::string common_name = "localhost";
  // subjectAltName entries in OpenSSL's syntax.
  std::string alt_names = "DNS:localhost,IP:127.0.0.1";
  long valid_days = 365;
};

struct SelfSignedCertificate {
  std::string pem;
  std::vector<std::uint8_t> der;
  std::vector<std::uint8_t> subject_der;  // DER of the subject name (CKA_SUBJECT)
};

// A v3 server certificate for `key` (CA:FALSE, digitalSignature, serverAuth, subject
// key identifier, the alt names), valid from an hour ago for `valid_days` days, with a
// random 127-bit serial, signed with SHA-256 by `key` itself. Throws
// std::runtime_error naming the OpenSSL step that failed.
SelfSignedCertificate make_self_signed_certificate(EVP_PKEY* key, const CertificateRequest& request = {});

}  // namespace keysvc::openssl
