#include "keysvc/openssl/server_key_pair.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/object.h"

namespace keysvc::openssl {

namespace {

using hsm::Call;
using hsm::checked_call;

// DER of the P-256 curve's OID (1.2.840.10045.3.1.7), the CKA_EC_PARAMS value.
constexpr CK_BYTE kP256Params[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr CK_BYTE kRsaExponent[] = {0x01, 0x00, 0x01};
constexpr CK_ULONG kRsaBits = 2048;

using Flags = std::initializer_list<std::pair<CK_ATTRIBUTE_TYPE, bool>>;

// An attribute template; the values it points to must outlive the C_* call.
class Template {
 public:
  // Every object made here: its class, CKA_ID, CKA_LABEL and its CK_BBOOL attributes.
  Template(const CK_OBJECT_CLASS& cls, std::span<const std::uint8_t> id, const std::string& label, Flags flags) {
    add(CKA_CLASS, &cls, sizeof cls);
    add(CKA_ID, id.data(), id.size());
    add(CKA_LABEL, label.data(), label.size());
    for (const auto& [type, value] : flags) add(type, value ? &kYes : &kNo, sizeof(CK_BBOOL));
  }
  void add(CK_ATTRIBUTE_TYPE type, const void* value, std::size_t size) {
    attrs_.push_back({type, const_cast<void*>(value), static_cast<CK_ULONG>(size)});
  }
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

  Template pub(public_class, id, label,
               {{CKA_TOKEN, true}, {CKA_PRIVATE, false}, {CKA_VERIFY, true}, {CKA_VERIFY_RECOVER, false},
                {CKA_ENCRYPT, false}, {CKA_WRAP, false}, {CKA_DERIVE, false}, {CKA_MODIFIABLE, false}});
  pub.add(CKA_KEY_TYPE, &key_type, sizeof key_type);
  if (ec) {
    pub.add(CKA_EC_PARAMS, kP256Params, sizeof kP256Params);
  } else {
    pub.add(CKA_MODULUS_BITS, &kRsaBits, sizeof kRsaBits);
    pub.add(CKA_PUBLIC_EXPONENT, kRsaExponent, sizeof kRsaExponent);
  }

  Template priv(private_class, id, label,
                {{CKA_TOKEN, true}, {CKA_PRIVATE, true}, {CKA_SENSITIVE, true}, {CKA_EXTRACTABLE, false},
                 {CKA_SIGN, true}, {CKA_SIGN_RECOVER, false}, {CKA_DECRYPT, false}, {CKA_UNWRAP, false},
                 {CKA_DERIVE, false}, {CKA_COPYABLE, false}, {CKA_MODIFIABLE, false}, {CKA_DESTROYABLE, true}});
  priv.add(CKA_KEY_TYPE, &key_type, sizeof key_type);

  CK_MECHANISM mech{ec ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
  ServerKeyPair pair;
  checked_call(session, Call::kGenerateKeyPair, session.fn()->C_GenerateKeyPair, session.handle(), &mech,
               pub.data(), pub.size(), priv.data(), priv.size(), &pair.public_key, &pair.private_key);
  return pair;
}

CK_OBJECT_HANDLE store_certificate(hsm::Session& session, std::span<const std::uint8_t> der,
                                   std::span<const std::uint8_t> subject_der, std::span<const std::uint8_t> id,
                                   const std::string& label) {
  const CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
  const CK_CERTIFICATE_TYPE cert_type = CKC_X_509;
  Template t(cls, id, label, {{CKA_TOKEN, true}, {CKA_PRIVATE, false}, {CKA_MODIFIABLE, false}});
  t.add(CKA_CERTIFICATE_TYPE, &cert_type, sizeof cert_type);
  t.add(CKA_VALUE, der.data(), der.size());
  t.add(CKA_SUBJECT, subject_der.data(), subject_der.size());
  CK_OBJECT_HANDLE cert = CK_INVALID_HANDLE;
  checked_call(session, Call::kCreateObject, session.fn()->C_CreateObject, session.handle(), t.data(), t.size(),
               &cert);
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
