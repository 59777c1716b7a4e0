// Finding, reading and destroying token objects, and keysvc's small data objects.
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keysvc/hsm/session.h"

namespace keysvc::hsm {

using Bytes = std::vector<std::uint8_t>;

// What to look for: every field that is set must match.
struct ObjectQuery {
  std::optional<CK_OBJECT_CLASS> object_class;
  std::optional<Bytes> id;
  std::optional<std::string> label;
  std::optional<std::string> application;  // CKA_APPLICATION (data objects)
};

// C_FindObjectsInit / C_FindObjects / C_FindObjectsFinal.
std::vector<CK_OBJECT_HANDLE> find_objects(Session& session, const ObjectQuery& query);

// Reads a variable-length attribute (CKA_ID, CKA_LABEL, a data object's CKA_VALUE).
// Throws Pkcs11Error, e.g. CKR_ATTRIBUTE_SENSITIVE for a sensitive key's CKA_VALUE.
Bytes get_attribute(Session& session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);

// Reads a CK_BBOOL attribute.
bool get_bool_attribute(Session& session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);

void destroy_object(Session& session, CK_OBJECT_HANDLE object);

// Creates a private token data object (CKO_DATA, readable only after login) holding
// `value`, with CKA_APPLICATION and CKA_LABEL set (PKCS#11 data objects have no CKA_ID).
// Data objects hold metadata only, never key material.
CK_OBJECT_HANDLE create_data_object(Session& session, const std::string& application, const std::string& label,
                                    std::span<const std::uint8_t> value);

// How a data object made by create_data_object(session, options, ...) may be used.
struct DataObjectOptions {
  bool is_private = true;   // CKA_PRIVATE: readable only after login (false: by any session)
  bool modifiable = false;  // CKA_MODIFIABLE: its CKA_VALUE may be replaced (set_value)
};
CK_OBJECT_HANDLE create_data_object(Session& session, const DataObjectOptions& options, const std::string& application,
                                    const std::string& label, std::span<const std::uint8_t> value);

// C_SetAttributeValue of one attribute (a modifiable data object's CKA_VALUE). Throws
// Pkcs11Error (CKR_ATTRIBUTE_READ_ONLY, CKR_ACTION_PROHIBITED: a token that does not let
// it change).
void set_attribute(Session& session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                   std::span<const std::uint8_t> value);

}  // namespace keysvc::hsm
