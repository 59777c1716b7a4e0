#include "keysvc/hsm/session_copy.h"

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

CK_OBJECT_HANDLE copy_to_session(Session& session, CK_OBJECT_HANDLE token_key, const std::string& label) {
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  // CKA_MODIFIABLE=FALSE last: SoftHSM applies the template in order, and refuses every
  // attribute after it.
  CK_ATTRIBUTE tmpl[] = {
      {CKA_TOKEN, &no, 1},
      {CKA_PRIVATE, &yes, 1},
      {CKA_SIGN, &yes, 1},
      {CKA_VERIFY, &no, 1},
      {CKA_ENCRYPT, &no, 1},
      {CKA_DECRYPT, &no, 1},
      {CKA_WRAP, &no, 1},
      {CKA_UNWRAP, &no, 1},
      {CKA_DERIVE, &no, 1},
      {CKA_DESTROYABLE, &yes, 1},
      {CKA_LABEL, const_cast<char*>(label.data()), static_cast<CK_ULONG>(label.size())},
      {CKA_MODIFIABLE, &no, 1},
  };
  CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
  checked_call(session, Call::kCopyObject, session.fn()->C_CopyObject, session.handle(), token_key, tmpl,
               std::size(tmpl), &copy);
  // Inherited, not set (see the header): check them rather than trust the token.
  CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE;
  CK_ATTRIBUTE custody[] = {{CKA_SENSITIVE, &sensitive, 1}, {CKA_EXTRACTABLE, &extractable, 1}};
  CK_RV rv = call(session, Call::kGetAttributeValue, session.fn()->C_GetAttributeValue, session.handle(), copy,
                  custody, std::size(custody));
  if (rv != CKR_OK || sensitive != CK_TRUE || extractable != CK_FALSE) {
    call(session, Call::kDestroyObject, session.fn()->C_DestroyObject, session.handle(), copy);
    throw Pkcs11Error("C_CopyObject (copy not sensitive, or extractable)",
                      rv != CKR_OK ? rv : CKR_TEMPLATE_INCONSISTENT);
  }
  return copy;
}

bool copy_refused(CK_RV rv) noexcept {
  return rv == CKR_ACTION_PROHIBITED || rv == CKR_ATTRIBUTE_READ_ONLY || rv == CKR_FUNCTION_NOT_SUPPORTED ||
         rv == CKR_TEMPLATE_INCONSISTENT || rv == CKR_ATTRIBUTE_VALUE_INVALID;
}

bool object_exists(Session& session, CK_OBJECT_HANDLE object) {
  CK_BBOOL sign = CK_FALSE;
  CK_ATTRIBUTE a{CKA_SIGN, &sign, sizeof sign};
  CK_RV rv = call(session, Call::kGetAttributeValue, session.fn()->C_GetAttributeValue, session.handle(),
                  object, &a, 1);
  if (rv == CKR_OBJECT_HANDLE_INVALID) return false;
  if (rv != CKR_OK) throw Pkcs11Error("C_GetAttributeValue", rv);
  return true;
}

}  // namespace keysvc::hsm
