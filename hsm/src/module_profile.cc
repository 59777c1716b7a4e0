#include "keysvc/hsm/module_profile.h"

#include <cstdlib>

#include "keysvc/hsm/token_uri.h"

namespace keysvc::hsm {

ModuleProfile profile_of(const CK_INFO& module, const CK_TOKEN_INFO& token) {
  const std::string module_maker = trim_padded(module.manufacturerID, sizeof module.manufacturerID);
  const std::string token_model = trim_padded(token.model, sizeof token.model);
  const std::string token_maker = trim_padded(token.manufacturerID, sizeof token.manufacturerID);
  ModuleProfile p;
  p.name = "generic";
  // The token's maker and model, not the module's, say what a proxy (p11-kit's client)
  // forwards to; tpm2-pkcs11 reports the TPM's maker as the token's, so it is known by
  // its module.
  if (module_maker.starts_with("tpm2-software")) {
    p.name = "tpm2-pkcs11";
    p.key_source = KeySource::kReserved;
    p.hmac_key_type = CKK_SHA256_HMAC;
    p.rescan_needs_reinitialize = true;
    p.busy_store_general_error = true;
    p.custody_enforced = false;
    const char* tool = std::getenv("KEYSVC_TPM2_KEY_TOOL");
    p.key_tool = tool && *tool ? tool : kDefaultTpm2KeyTool;
    // The module's own search order for its store: $TPM2_PKCS11_STORE, then the system
    // store; a store elsewhere (~/.tpm2_pkcs11) leaves store_file empty.
    const char* store = std::getenv("TPM2_PKCS11_STORE");
    p.store_file = std::string(store && *store ? store : "/etc/tpm2_pkcs11") + "/tpm2_pkcs11.sqlite3";
  } else if (token_model == "IBM SoftTok") {
    p.name = "opencryptoki soft token";
    p.v240_attributes = false;
    p.generic_key_sizes_in_bits = true;
  } else if (token_maker.starts_with("SoftHSM") || token_model.starts_with("SoftHSM")) {
    p.name = "SoftHSM 2";
  }
  // A token older than PKCS#11 2.40 does not know CKA_COPYABLE / CKA_DESTROYABLE.
  if (module.cryptokiVersion.major == 2 && module.cryptokiVersion.minor < 40) p.v240_attributes = false;
  return p;
}

}  // namespace keysvc::hsm
