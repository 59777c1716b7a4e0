// A TLS server's signing key pair generated inside a PKCS#11 token (for
// TokenPrivateKey), and its certificate stored next to it.
//
// The private key never leaves the token and can only sign; every usage attribute is
// set explicitly, because tokens differ in their defaults:
//   private: CKA_TOKEN=TRUE CKA_PRIVATE=TRUE CKA_SENSITIVE=TRUE CKA_EXTRACTABLE=FALSE
//            CKA_SIGN=TRUE CKA_SIGN_RECOVER=FALSE CKA_DECRYPT=FALSE CKA_UNWRAP=FALSE
//            CKA_DERIVE=FALSE CKA_COPYABLE=FALSE CKA_MODIFIABLE=FALSE CKA_DESTROYABLE=TRUE
//   public:  CKA_TOKEN=TRUE CKA_PRIVATE=FALSE CKA_VERIFY=TRUE CKA_VERIFY_RECOVER=FALSE
//            CKA_ENCRYPT=FALSE CKA_WRAP=FALSE CKA_DERIVE=FALSE CKA_MODIFIABLE=FALSE
// Both halves (and the certificate) share CKA_ID and CKA_LABEL, so
// pkcs11:token=T;object=LABEL;type=private names the private key.
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "keysvc/hsm/session.h"

namespace keysvc::openssl {

enum class ServerKeyType { kEcP256, kRsa2048 };

// "ec-p256" / "rsa-2048".
const char* to_string(ServerKeyType type) noexcept;

struct ServerKeyPair {
  CK_OBJECT_HANDLE private_key = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE;
};

// C_GenerateKeyPair (CKM_EC_KEY_PAIR_GEN on P-256, or CKM_RSA_PKCS_KEY_PAIR_GEN with
// 2048 bits and exponent 65537) with the attributes above, on a logged-in read-write
// session. Throws hsm::Pkcs11Error.
ServerKeyPair generate_server_key_pair(hsm::Session& session, ServerKeyType type,
                                       std::span<const std::uint8_t> id, const std::string& label);

// Stores a DER X.509 certificate as a public token object (CKO_CERTIFICATE, CKC_X_509)
// with CKA_SUBJECT, CKA_ID and CKA_LABEL. Throws hsm::Pkcs11Error.
CK_OBJECT_HANDLE store_certificate(hsm::Session& session, std::span<const std::uint8_t> der,
                                   std::span<const std::uint8_t> subject_der, std::span<const std::uint8_t> id,
                                   const std::string& label);

// Every object (any class) with this CKA_LABEL or this CKA_ID.
std::vector<CK_OBJECT_HANDLE> objects_named(hsm::Session& session, const std::string& label,
                                            std::span<const std::uint8_t> id);

}  // namespace keysvc::openssl
