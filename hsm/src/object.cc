#include "keysvc/hsm/object.h"

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/error.h"
#include "token_write.h"

namespace keysvc::hsm {

namespace {
CK_ATTRIBUTE attr(CK_ATTRIBUTE_TYPE type, const void* value, std::size_t len) {
  return CK_ATTRIBUTE{type, const_cast<void*>(value), static_cast<CK_ULONG>(len)};
}

}  // namespace

std::vector<CK_OBJECT_HANDLE> find_objects(Session& session, const ObjectQuery& query) {
  std::vector<CK_ATTRIBUTE> tmpl;
  CK_OBJECT_CLASS cls = query.object_class.value_or(0);
  if (query.object_class) tmpl.push_back(attr(CKA_CLASS, &cls, sizeof cls));
  if (query.id) tmpl.push_back(attr(CKA_ID, query.id->data(), query.id->size()));
  if (query.label) tmpl.push_back(attr(CKA_LABEL, query.label->data(), query.label->size()));
  if (query.application)
    tmpl.push_back(attr(CKA_APPLICATION, query.application->data(), query.application->size()));

  auto* fn = session.fn();
  checked_call(session, Call::kFindObjectsInit, fn->C_FindObjectsInit, session.handle(), tmpl.data(), tmpl.size());
  std::vector<CK_OBJECT_HANDLE> found;
  CK_RV rv = CKR_OK;
  for (;;) {
    CK_OBJECT_HANDLE batch[64];
    CK_ULONG n = 0;
    rv = call(session, Call::kFindObjects, fn->C_FindObjects, session.handle(), batch, 64, &n);
    if (rv != CKR_OK || n == 0) break;
    found.insert(found.end(), batch, batch + n);
  }
  // Always finish the search, or the session stays in CKR_OPERATION_ACTIVE.
  CK_RV final_rv = call(session, Call::kFindObjectsFinal, fn->C_FindObjectsFinal, session.handle());
  check(rv, "C_FindObjects");
  check(final_rv, "C_FindObjectsFinal");
  return found;
}

Bytes get_attribute(Session& session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  CK_ATTRIBUTE a = attr(type, nullptr, 0);
  checked_call(session, Call::kGetAttributeValue, session.fn()->C_GetAttributeValue, session.handle(), object,
               &a, 1);
  Bytes value(a.ulValueLen);
  a.pValue = value.data();
  checked_call(session, Call::kGetAttributeValue, session.fn()->C_GetAttributeValue, session.handle(), object,
               &a, 1);
  value.resize(a.ulValueLen);
  return value;
}

bool get_bool_attribute(Session& session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  CK_BBOOL value = CK_FALSE;
  CK_ATTRIBUTE a = attr(type, &value, sizeof value);
  checked_call(session, Call::kGetAttributeValue, session.fn()->C_GetAttributeValue, session.handle(), object,
               &a, 1);
  return value == CK_TRUE;
}

void destroy_object(Session& session, CK_OBJECT_HANDLE object) {
  checked_write(session, Call::kDestroyObject, session.fn()->C_DestroyObject, session.handle(), object);
}

CK_OBJECT_HANDLE create_data_object(Session& session, const std::string& application, const std::string& label,
                                    std::span<const std::uint8_t> value) {
  return create_data_object(session, DataObjectOptions{}, application, label, value);
}

CK_OBJECT_HANDLE create_data_object(Session& session, const DataObjectOptions& options, const std::string& application,
                                    const std::string& label, std::span<const std::uint8_t> value) {
  CK_OBJECT_CLASS cls = CKO_DATA;
  CK_BBOOL yes = CK_TRUE;
  CK_BBOOL is_private = options.is_private ? CK_TRUE : CK_FALSE;
  CK_BBOOL modifiable = options.modifiable ? CK_TRUE : CK_FALSE;
  CK_ATTRIBUTE tmpl[] = {
      attr(CKA_CLASS, &cls, sizeof cls),
      attr(CKA_TOKEN, &yes, sizeof yes),
      attr(CKA_PRIVATE, &is_private, sizeof is_private),
      attr(CKA_MODIFIABLE, &modifiable, sizeof modifiable),
      attr(CKA_APPLICATION, application.data(), application.size()),
      attr(CKA_LABEL, label.data(), label.size()),
      attr(CKA_VALUE, value.data(), value.size()),
  };
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  checked_write(session, Call::kCreateObject, session.fn()->C_CreateObject, session.handle(), tmpl, std::size(tmpl),
                &handle);
  return handle;
}

void set_attribute(Session& session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                   std::span<const std::uint8_t> value) {
  CK_ATTRIBUTE a = attr(type, value.data(), value.size());
  checked_write(session, Call::kSetAttributeValue, session.fn()->C_SetAttributeValue, session.handle(), object, &a, 1);
}

}  // namespace keysvc::hsm
