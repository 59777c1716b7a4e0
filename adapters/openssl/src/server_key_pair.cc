#include "keysvc/openssl/server_key_pair.h"

#include <algorithm>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"

namespace keysvc::openssl {

namespace {

// DER of the P-256 curve's OID (1.2.840.10045.3.1.7), the CKA_EC_PARAMS value.
constexpr CK_BYTE kP256Params[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr CK_BYTE kRsaExponent[] = {0x01, 0x00, 0x01};
constexpr CK_ULONG kRsaBits = 2048;

// An attribute template; the values it points to must outlive the C_* call.
class Template {
 public:
  void add(CK_ATTRIBUTE_TYPE type, const void* value, std::size_t size) {
    attrs_.push_back({type, const_cast<void*>(value), static_cast<CK_ULONG>(size)});
  }
  void flag(CK_ATTRIBUTE_TYPE type, bool value) { add(type, value ? &kYes : &kNo, sizeof(CK_BBOOL)); }
  CK_ATTRIBUTE* data() noexcept { return attrs_.data(); }
  CK_ULONG size() const noexcept { return attrs_.size(); }

 private:
  static constexpr CK_BBOOL kYes = CK_TRUE, kNo = CK_FALSE;
  std::vector<CK_ATTRIBUTE> attrs_;
};

}  // namespace

const char* to_string(ServerKeyType type) noexcept { return type == ServerKeyType::kEcP256 ? "ec-p256" : "rsa-2048"; }

ServerKeyPair generate_server_key_pair(hsm::Session& session, ServerKeyType type, std::span<const std::uint8_t> id,
                                       const std::string& label) {
  const bool ec = type == ServerKeyType::kEcP256;
  const CK_OBJECT_CLASS public_class = CKO_PUBLIC_KEY, private_class = CKO_PRIVATE_KEY;
  const CK_KEY_TYPE key_type = ec ? CKK_EC : CKK_RSA;

  Template pub;
  pub.add(CKA_CLASS, &public_class, sizeof public_class);
  pub.add(CKA_KEY_TYPE, &key_type, sizeof key_type);
  pub.flag(CKA_TOKEN, true);
  pub.flag(CKA_PRIVATE, false);
  pub.flag(CKA_VERIFY, true);
  pub.flag(CKA_VERIFY_RECOVER, false);
  pub.flag(CKA_ENCRYPT, false);
  pub.flag(CKA_WRAP, false);
  pub.flag(CKA_DERIVE, false);
  pub.flag(CKA_MODIFIABLE, false);
  pub.add(CKA_ID, id.data(), id.size());
  pub.add(CKA_LABEL, label.data(), label.size());
  if (ec) {
    pub.add(CKA_EC_PARAMS, kP256Params, sizeof kP256Params);
  } else {
    pub.add(CKA_MODULUS_BITS, &kRsaBits, sizeof kRsaBits);
    pub.add(CKA_PUBLIC_EXPONENT, kRsaExponent, sizeof kRsaExponent);
  }

  Template priv;
  priv.add(CKA_CLASS, &private_class, sizeof private_class);
  priv.add(CKA_KEY_TYPE, &key_type, sizeof key_type);
  priv.flag(CKA_TOKEN, true);
  priv.flag(CKA_PRIVATE, true);
  priv.flag(CKA_SENSITIVE, true);
  priv.flag(CKA_EXTRACTABLE, false);
  priv.flag(CKA_SIGN, true);
  priv.flag(CKA_SIGN_RECOVER, false);
  priv.flag(CKA_DECRYPT, false);
  priv.flag(CKA_UNWRAP, false);
  priv.flag(CKA_DERIVE, false);
  priv.flag(CKA_COPYABLE, false);
  priv.flag(CKA_MODIFIABLE, false);
  priv.flag(CKA_DESTROYABLE, true);
  priv.add(CKA_ID, id.data(), id.size());
  priv.add(CKA_LABEL, label.data(), label.size());

  CK_MECHANISM mech{ec ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
  ServerKeyPair pair;
  hsm::check(session.fn()->C_GenerateKeyPair(session.handle(), &mech, pub.data(), pub.size(), priv.data(),
                                             priv.size(), &pair.public_key, &pair.private_key),
             "C_GenerateKeyPair");
  return pair;
}

CK_OBJECT_HANDLE store_certificate(hsm::Session& session, std::span<const std::uint8_t> der,
                                   std::span<const std::uint8_t> subject_der, std::span<const std::uint8_t> id,
                                   const std::string& label) {
  const CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
  const CK_CERTIFICATE_TYPE cert_type = CKC_X_509;
  Template t;
  t.add(CKA_CLASS, &cls, sizeof cls);
  t.add(CKA_CERTIFICATE_TYPE, &cert_type, sizeof cert_type);
  t.flag(CKA_TOKEN, true);
  t.flag(CKA_PRIVATE, false);
  t.flag(CKA_MODIFIABLE, false);
  t.add(CKA_VALUE, der.data(), der.size());
  t.add(CKA_SUBJECT, subject_der.data(), subject_der.size());
  t.add(CKA_ID, id.data(), id.size());
  t.add(CKA_LABEL, label.data(), label.size());
  CK_OBJECT_HANDLE cert = CK_INVALID_HANDLE;
  hsm::check(session.fn()->C_CreateObject(session.handle(), t.data(), t.size(), &cert), "C_CreateObject");
  return cert;
}

std::vector<CK_OBJECT_HANDLE> objects_named(hsm::Session& session, const std::string& label,
                                            std::span<const std::uint8_t> id) {
  std::vector<CK_OBJECT_HANDLE> found = hsm::find_objects(session, {.label = label});
  for (CK_OBJECT_HANDLE h : hsm::find_objects(session, {.id = hsm::Bytes(id.begin(), id.end())}))
    if (std::find(found.begin(), found.end(), h) == found.end()) found.push_back(h);
  return found;
}

}  // namespace keysvc::openssl
