// What keysvcctl does before it changes a token whose implementation differs from the
// default (hsm/module_profile.h):
//   - tokens whose keys come from their own tool (tpm2-pkcs11): the keys of the
//     generations a command is about to make are reserved first (hsm/key_reservation.h),
//     before anything in the token changes, so a command never stops half-way for want
//     of a key;
// (Tokens that show other processes' changes only after a re-initialise: rotate --every
// restarts the module before a run through hsm/rescan.h.)
#pragma once

#include <cstddef>
#include <memory>

#include "keysvc/config.h"
#include "keysvc/hsm/key_reservation.h"
#include "keysvc/hsm/session_pool.h"

namespace keysvcctl {

// Reserves the keys of `generations` new generations under `config` (and of an audit
// seal key if the audit trail is on and may need one). nullptr where the token
// generates keys itself, or for 0 generations. The caller keeps it until the command
// is done: unclaimed keys are destroyed when it goes.
std::unique_ptr<keysvc::hsm::KeyReservation> reserve_keys(const keysvc::Config& config,
                                                          const keysvc::hsm::Token& token, std::size_t generations);

}  // namespace keysvcctl
