// One way to write to a token's objects (create, destroy, set attributes, generate):
// the call, asked again where a token answers a passing condition as a failure. Used by
// object.cc, secret_key.cc and key_reservation.cc; internal to the hsm library.
//   - SoftHSM 2.6 answers a token-object write made while other threads of the same
//     process search the token with CKR_TEMPLATE_INCONSISTENT now and then (measured: 1
//     to 11 of 12 generated keys with four threads scanning; also seen on
//     C_CreateObject): its object files' fcntl locks do not exclude threads of one
//     process, and a search re-reading the new object's file drops the attributes the
//     write is checking. A template a token really refuses is refused every time, so up
//     to 3 attempts;
//   - where the profile says a busy store answers CKR_GENERAL_ERROR (module_profile.h:
//     tpm2-pkcs11's SQLite store while another process holds it), after pauses of 25 ms,
//     doubling, for about 1.5 s in all: the other process's transaction is short, and a
//     rotator that gave up there would leave half a rotation for the next run.
#pragma once

#include <chrono>
#include <thread>

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/session.h"

namespace keysvc::hsm {

// The call's final CK_RV (the caller decides what a failure means).
template <class F, class... Args>
CK_RV write_call(Session& session, Call c, F f, Args&&... args) {
  CK_RV rv = call(session, c, f, args...);
  for (int attempt = 2; attempt <= 3 && rv == CKR_TEMPLATE_INCONSISTENT; ++attempt) rv = call(session, c, f, args...);
  if (!session.profile().busy_store_general_error) return rv;
  for (std::chrono::milliseconds pause(25); rv == CKR_GENERAL_ERROR && pause <= std::chrono::milliseconds(800);
       pause *= 2) {
    std::this_thread::sleep_for(pause);
    rv = call(session, c, f, args...);
  }
  return rv;
}

// write_call(), then throws Pkcs11Error(call_name(c), rv) unless CKR_OK.
template <class F, class... Args>
void checked_write(Session& session, Call c, F f, Args&&... args) {
  throw_unless_ok(c, write_call(session, c, f, std::forward<Args>(args)...));
}

}  // namespace keysvc::hsm
