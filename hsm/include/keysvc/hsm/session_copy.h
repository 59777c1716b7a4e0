// Session-object copies of token secret keys (C_CopyObject with CKA_TOKEN=FALSE).
//
// Why: SoftHSM re-reads and locks a token object's files on every use, so an HMAC with
// a token-object key costs about 35 us of CPU, and the same HMAC with a session-object
// copy about 11 us (docs/PERFORMANCE.md). A copy holds the same key material inside the
// token, lives only as long as the session that made it (and the login), and is visible
// to the other sessions of the same process only.
//
// Every attribute of the copy that the template can set is set explicitly:
//   CKA_TOKEN=FALSE CKA_PRIVATE=TRUE CKA_SIGN=TRUE CKA_VERIFY=FALSE CKA_ENCRYPT=FALSE
//   CKA_DECRYPT=FALSE CKA_WRAP=FALSE CKA_UNWRAP=FALSE CKA_DERIVE=FALSE
//   CKA_MODIFIABLE=FALSE CKA_DESTROYABLE=TRUE
//   CKA_LABEL=label (so searches for the token key by its label never find the copy)
// CKA_SENSITIVE, CKA_EXTRACTABLE and CKA_COPYABLE cannot be in a copy template (SoftHSM:
// CKR_ATTRIBUTE_READ_ONLY, even for the same value): the copy inherits them from the
// source (TRUE, FALSE, TRUE), and copy_to_session checks the first two before returning.
// With MODIFIABLE=FALSE the copy can never be changed, nor copied into a token object.
// The token refuses the copy unless the source key is CKA_COPYABLE (and, in SoftHSM,
// CKA_MODIFIABLE, which any copy template needs): see hsm::Copyable in secret_key.h.
#pragma once

#include <p11-kit/pkcs11.h>

#include <string>

#include "keysvc/hsm/session.h"

namespace keysvc::hsm {

// Copies `token_key` into a session object owned by `session` with the attributes above.
// Throws Pkcs11Error; CKR_ACTION_PROHIBITED (or CKR_ATTRIBUTE_READ_ONLY) means the
// source is not copyable: see copy_refused().
CK_OBJECT_HANDLE copy_to_session(Session& session, CK_OBJECT_HANDLE token_key, const std::string& label);

// True if `rv` from copy_to_session means the source key may not be copied (rather
// than a failing session or token): retrying will not help.
bool copy_refused(CK_RV rv) noexcept;

// True if `object` is still known to the token (a session copy disappears when its
// session closes or the user is logged out).
bool object_exists(Session& session, CK_OBJECT_HANDLE object);

}  // namespace keysvc::hsm
