// Keys made ahead by the token's own tool, for tokens whose keys cannot be generated
// through PKCS#11 (ModuleProfile::key_source == KeySource::kReserved: tpm2-pkcs11).
//
//   KeyReservation reserved(token, pin, 3);  // the tool makes 3 keys labelled for this
//                                            // process; then Module::restart(), since the
//                                            // module shows them only after C_Initialize
//   generate_hmac_key(session, id, label);   // (secret_key.h) claims one of them: sets
//                                            // its CKA_ID and CKA_LABEL in this process
//   // ~KeyReservation destroys the ones nobody claimed
//
// The keys are generated inside the TPM (CKA_LOCAL, sensitive, never extractable) by
// tools/keysvc-tpm2-keys, which reads the user PIN from its standard input (never argv).
// A claimed key is renamed in this process, so this process sees it at once; other
// processes see it after their next re-initialise, like any object made elsewhere.
// Keys reserved by a process that died before claiming them stay in the token under a
// "keysvc-reserved" label; nothing uses them (`keysvcctl doctor` counts them).
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/session.h"
#include "keysvc/hsm/token.h"

namespace keysvc::hsm {

// Prefix of the label of reserved, not yet claimed keys.
inline constexpr char kReservedKeyLabelPrefix[] = "keysvc-reserved ";

class KeyReservation {
 public:
  // Runs the token's key tool (ModuleProfile::key_tool) to make `count` HMAC-SHA256 keys
  // labelled reserved_key_label(), then restarts the module so this process sees them.
  // Throws UnsupportedError unless the token's keys come from its tool and keysvc is
  // the module's only user in this process; Error (one line, the tool's reason) if the
  // tool fails; Pkcs11Error if the module does not come back.
  KeyReservation(const Token& token, const PinSource& pin, std::size_t count);
  // Destroys the reserved keys nobody claimed (errors are ignored: they are unused).
  ~KeyReservation();
  KeyReservation(const KeyReservation&) = delete;
  KeyReservation& operator=(const KeyReservation&) = delete;

 private:
  Token token_;
};

// The label of the keys this process reserves: the prefix, the process ID and a random part.
const std::string& reserved_key_label();

// Claims a key this process reserved: sets its CKA_ID to `id` and its CKA_LABEL to
// `label`, and returns it. Throws UnsupportedError if none is left (a server, or a
// command that reserved too few).
CK_OBJECT_HANDLE claim_reserved_key(Session& session, std::span<const std::uint8_t> id, const std::string& label);

}  // namespace keysvc::hsm
