// What keysvc knows about the PKCS#11 implementation behind a token: the one place that
// holds each module's differences from what keysvc does by default (docs/DEPLOYMENT.md,
// "Compatibility"). Everything else asks the profile instead of testing module names.
//
// Measured differences (Debian bookworm packages):
//   SoftHSM 2.6 (also behind p11-kit's client): the defaults. Keys from
//     CKM_GENERIC_SECRET_KEY_GEN as CKK_GENERIC_SECRET; PKCS#11 2.40 attributes
//     (CKA_COPYABLE, CKA_DESTROYABLE); another process's new objects are found at once.
//   opencryptoki 3.8 soft token: a PKCS#11 2.20 token. C_GenerateKey refuses
//     CKA_COPYABLE and CKA_DESTROYABLE (CKR_ATTRIBUTE_TYPE_INVALID), and C_GetAttributeValue
//     does not know them either; key sizes of CKM_GENERIC_SECRET_KEY_GEN are in bits.
//   tpm2-pkcs11 1.9: C_GenerateKey is CKR_FUNCTION_NOT_SUPPORTED for every key type. HMAC
//     keys are CKK_SHA256_HMAC objects made by its Python tools (hsm/key_reservation.h);
//     no C_CopyObject. A process sees the token's objects as they were at its
//     C_Initialize: another process's new or destroyed objects appear only after
//     C_Finalize + C_Initialize (Module::restart). Attributes are metadata in its store,
//     not enforced: C_SetAttributeValue can turn CKA_EXTRACTABLE on. Its store is one
//     SQLite file: a write while another process holds it busy fails (CKR_GENERAL_ERROR).
// Anything else gets the defaults, and `keysvcctl doctor` tells what it lacks.
#pragma once

#include <p11-kit/pkcs11.h>

#include <string>

namespace keysvc::hsm {

// How keysvc gets a new long-term HMAC key into the token.
enum class KeySource {
  kGenerate,  // C_GenerateKey(CKM_GENERIC_SECRET_KEY_GEN) in the calling process
  kReserved,  // the module's own tool makes keys ahead; keysvc names one (key_reservation.h)
};

struct ModuleProfile {
  std::string name;  // "SoftHSM 2", "opencryptoki soft token", "tpm2-pkcs11", "generic"
  KeySource key_source = KeySource::kGenerate;
  // CKA_KEY_TYPE of the keys keysvc makes for CKM_SHA256_HMAC / CKM_SHA512_HMAC.
  CK_KEY_TYPE hmac_key_type = CKK_GENERIC_SECRET;
  // The token knows the PKCS#11 2.40 key attributes CKA_COPYABLE and CKA_DESTROYABLE.
  bool v240_attributes = true;
  // CKM_GENERIC_SECRET_KEY_GEN's ulMinKeySize / ulMaxKeySize are bits (else bytes).
  bool generic_key_sizes_in_bits = false;
  // Another process's new or destroyed objects are seen only after C_Finalize +
  // C_Initialize (Module::restart), not by a new search, session or login.
  bool rescan_needs_reinitialize = false;
  // A write to the token's store (C_CreateObject, C_DestroyObject, C_SetAttributeValue)
  // fails with CKR_GENERAL_ERROR while another process holds the store busy, and may be
  // tried again (tpm2-pkcs11: SQLite's "database is locked", met when servers
  // re-initialise while the rotator writes).
  bool busy_store_general_error = false;
  // The token enforces CKA_SENSITIVE / CKA_EXTRACTABLE (they cannot be turned off).
  bool custody_enforced = true;
  // Where the key tool is (KeySource::kReserved): $KEYSVC_TPM2_KEY_TOOL, or the
  // installed tools/keysvc-tpm2-keys.
  std::string key_tool;
  // A file every change to the token's objects rewrites (tpm2-pkcs11: its SQLite store,
  // $TPM2_PKCS11_STORE/tpm2_pkcs11.sqlite3), so a rescan re-initialises only after a
  // change (hsm/rescan.h); empty: unknown, re-initialise before every rescan.
  std::string store_file;
};

// The profile of the implementation that reports `module` (C_GetInfo) and `token`
// (C_GetTokenInfo of the token keysvc uses).
ModuleProfile profile_of(const CK_INFO& module, const CK_TOKEN_INFO& token);

// Where the tpm2-pkcs11 key tool is installed.
inline constexpr char kDefaultTpm2KeyTool[] = "/usr/libexec/keysvc/keysvc-tpm2-keys";

}  // namespace keysvc::hsm
