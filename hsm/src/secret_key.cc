#include "keysvc/hsm/secret_key.h"

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/key_reservation.h"
#include "keysvc/hsm/object.h"
#include "token_write.h"

namespace keysvc::hsm {

namespace {

// Attributes shared by generated and imported keys, as the token's profile allows
// (module_profile.h). The template keeps pointers into this struct, so it must outlive
// the C_* call.
struct KeyTemplate {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_GENERIC_SECRET;
  CK_ULONG len = kHmacKeyBytes;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  std::vector<CK_ATTRIBUTE> attrs;

  KeyTemplate(const ModuleProfile& profile, std::span<const std::uint8_t> id, const std::string& label,
              Copyable copyable = Copyable::kNo, std::size_t key_bytes = kHmacKeyBytes)
      : type(profile.hmac_key_type), len(key_bytes) {
    const CK_BBOOL* copies = copyable == Copyable::kYes ? &yes : &no;
    auto add = [&](CK_ATTRIBUTE_TYPE t, const void* v, std::size_t n) {
      attrs.push_back({t, const_cast<void*>(v), static_cast<CK_ULONG>(n)});
    };
    add(CKA_CLASS, &cls, sizeof cls);
    add(CKA_KEY_TYPE, &type, sizeof type);
    add(CKA_TOKEN, &yes, 1);
    add(CKA_PRIVATE, &yes, 1);
    add(CKA_SENSITIVE, &yes, 1);
    add(CKA_EXTRACTABLE, &no, 1);
    add(CKA_SIGN, &yes, 1);
    add(CKA_VERIFY, &no, 1);
    add(CKA_ENCRYPT, &no, 1);
    add(CKA_DECRYPT, &no, 1);
    add(CKA_WRAP, &no, 1);
    add(CKA_UNWRAP, &no, 1);
    add(CKA_DERIVE, &no, 1);
    // A PKCS#11 2.20 token refuses the 2.40 attributes (CKR_ATTRIBUTE_TYPE_INVALID).
    if (profile.v240_attributes) add(CKA_COPYABLE, copies, 1);
    add(CKA_MODIFIABLE, copies, 1);
    if (profile.v240_attributes) add(CKA_DESTROYABLE, &yes, 1);
    add(CKA_ID, id.data(), id.size());
    add(CKA_LABEL, label.data(), label.size());
  }
};

}  // namespace

CK_OBJECT_HANDLE generate_hmac_key(Session& session, std::span<const std::uint8_t> id,
                                   const std::string& label, Copyable copyable, std::size_t key_bytes) {
  if (session.profile().key_source == KeySource::kReserved) {
    // Only HMAC-SHA256 keys are reserved, and the token decides whether they copy.
    if (key_bytes != kHmacKeyBytes || copyable == Copyable::kYes)
      throw UnsupportedError(session.profile().name + " has no " +
                             (copyable == Copyable::kYes ? "copyable keys (rotation.copyable_keys)"
                                                         : "HMAC-SHA512 keys (rotation.derivation = 2)"));
    return claim_reserved_key(session, id, label);
  }
  KeyTemplate t(session.profile(), id, label, copyable, key_bytes);
  t.attrs.push_back({CKA_VALUE_LEN, &t.len, sizeof t.len});
  CK_MECHANISM mech{CKM_GENERIC_SECRET_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  const CK_RV rv = write_call(session, Call::kGenerateKey, session.fn()->C_GenerateKey, session.handle(), &mech,
                              t.attrs.data(), t.attrs.size(), &key);
  // Answers that mean the token cannot do it at all, not that it failed this time.
  if (rv == CKR_MECHANISM_INVALID || rv == CKR_FUNCTION_NOT_SUPPORTED || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
      rv == CKR_TEMPLATE_INCONSISTENT || rv == CKR_KEY_SIZE_RANGE)
    throw UnsupportedError("the token (" + session.profile().name + ") cannot generate keysvc's " +
                           std::to_string(key_bytes) + "-byte HMAC keys with CKM_GENERIC_SECRET_KEY_GEN: C_GenerateKey: " +
                           rv_name(rv) + " (keysvcctl doctor names what it lacks)");
  throw_unless_ok(Call::kGenerateKey, rv);
  return key;
}

CK_OBJECT_HANDLE import_hmac_key(Session& session, std::span<const std::uint8_t> id,
                                 const std::string& label, std::span<const std::uint8_t> value) {
  KeyTemplate t(session.profile(), id, label);
  t.attrs.push_back({CKA_VALUE, const_cast<std::uint8_t*>(value.data()), static_cast<CK_ULONG>(value.size())});
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  checked_call(session, Call::kCreateObject, session.fn()->C_CreateObject, session.handle(), t.attrs.data(),
               t.attrs.size(), &key);
  return key;
}

namespace {
// C_SignInit + C_Sign with an HMAC mechanism whose output fills `mac` exactly.
void hmac(Session& session, CK_MECHANISM_TYPE mechanism, CK_OBJECT_HANDLE key, std::span<const std::uint8_t> data,
          std::span<std::uint8_t> mac) {
  CK_MECHANISM mech{mechanism, nullptr, 0};
  checked_call(session, Call::kSignInit, session.fn()->C_SignInit, session.handle(), &mech, key);
  CK_ULONG len = mac.size();
  // An empty span may have a null data(), which tokens refuse (CKR_ARGUMENTS_BAD) even
  // with a zero length; the HMAC of an empty message is well defined.
  CK_BYTE empty = 0;
  CK_BYTE_PTR in = data.empty() ? &empty : const_cast<std::uint8_t*>(data.data());
  checked_call(session, Call::kSign, session.fn()->C_Sign, session.handle(), in, data.size(), mac.data(),
               &len);
  if (len != mac.size()) throw Pkcs11Error("C_Sign", CKR_SIGNATURE_LEN_RANGE);
}
}  // namespace

void hmac_sha256(Session& session, CK_OBJECT_HANDLE key, std::span<const std::uint8_t> data,
                 std::span<std::uint8_t, kHmacSha256Bytes> mac) {
  hmac(session, CKM_SHA256_HMAC, key, data, mac);
}

void hmac_sha512(Session& session, CK_OBJECT_HANDLE key, std::span<const std::uint8_t> data,
                 std::span<std::uint8_t, kHmacSha512Bytes> mac) {
  hmac(session, CKM_SHA512_HMAC, key, data, mac);
}

KeyCustody read_custody(Session& session, CK_OBJECT_HANDLE key) {
  KeyCustody c;
  CK_BBOOL v[14] = {};
  CK_ATTRIBUTE a[] = {
      {CKA_SENSITIVE, &v[0], 1}, {CKA_ALWAYS_SENSITIVE, &v[1], 1}, {CKA_EXTRACTABLE, &v[2], 1},
      {CKA_NEVER_EXTRACTABLE, &v[3], 1}, {CKA_SIGN, &v[4], 1}, {CKA_VERIFY, &v[5], 1},
      {CKA_ENCRYPT, &v[6], 1}, {CKA_DECRYPT, &v[7], 1}, {CKA_WRAP, &v[8], 1},
      {CKA_UNWRAP, &v[9], 1}, {CKA_DERIVE, &v[10], 1}, {CKA_COPYABLE, &v[11], 1},
      {CKA_MODIFIABLE, &v[12], 1}, {CKA_LOCAL, &v[13], 1},
  };
  // One call for all; a token that does not know one of them (a 2.20 token and
  // CKA_COPYABLE) answers CKR_ATTRIBUTE_TYPE_INVALID, marks that one unavailable and, as
  // PKCS#11 requires, still fills in the others. They are read one by one then, so a
  // token that stops at the first unknown one is covered too.
  CK_RV rv = call(session, Call::kGetAttributeValue, session.fn()->C_GetAttributeValue, session.handle(), key, a,
                  std::size(a));
  if (rv == CKR_ATTRIBUTE_TYPE_INVALID) {
    for (auto& one : a) {
      one.ulValueLen = 1;
      CK_RV r = call(session, Call::kGetAttributeValue, session.fn()->C_GetAttributeValue, session.handle(), key,
                     &one, 1);
      if (r == CKR_ATTRIBUTE_TYPE_INVALID) one.ulValueLen = CK_UNAVAILABLE_INFORMATION;
      else throw_unless_ok(Call::kGetAttributeValue, r);
    }
    // Custody itself must be readable: only the usage attributes may be unknown.
    for (std::size_t k = 0; k < 4; ++k)
      if (a[k].ulValueLen == CK_UNAVAILABLE_INFORMATION) throw_unless_ok(Call::kGetAttributeValue, rv);
  } else {
    throw_unless_ok(Call::kGetAttributeValue, rv);
  }
  c.sensitive = v[0];
  c.always_sensitive = v[1];
  c.extractable = v[2];
  c.never_extractable = v[3];
  c.sign = v[4];
  c.verify = v[5];
  c.encrypt = v[6];
  c.decrypt = v[7];
  c.wrap = v[8];
  c.unwrap = v[9];
  c.derive = v[10];
  c.copyable = v[11];
  c.copyable_known = a[11].ulValueLen != CK_UNAVAILABLE_INFORMATION;
  c.modifiable = v[12];
  c.local = v[13];
  c.local_known = a[13].ulValueLen != CK_UNAVAILABLE_INFORMATION;
  c.enforced = session.profile().custody_enforced;
  return c;
}

}  // namespace keysvc::hsm
