// An open PKCS#11 session (RAII: C_OpenSession ... C_CloseSession).
//
// A session belongs to the module generation it was opened in (module.h). After a
// Module::restart() it is stale: calls on it are not made (they fail with
// CKR_SESSION_HANDLE_INVALID, so every caller treats it as a dead session), and its
// destructor does not close the old handle, which may name another session now.
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/module_profile.h"
#include "keysvc/hsm/secret.h"

namespace keysvc::hsm {

class Token;

class Session {
 public:
  Session(const Token& token, bool read_write);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  CK_FUNCTION_LIST* fn() const noexcept { return module_->fn(); }
  CK_SESSION_HANDLE handle() const noexcept { return handle_; }
  // Where calls on this session are recorded: its module's stats (see call_stats.h).
  CallStats& stats() const noexcept { return module_->stats(); }
  const Module& module() const noexcept { return *module_; }
  // The profile of the session's token (module_profile.h).
  const ModuleProfile& profile() const noexcept { return *profile_; }
  // The module generation the session was opened in, and whether that is over.
  std::uint64_t generation() const noexcept { return generation_; }
  bool stale() const noexcept { return generation_ != module_->generation(); }

  // True if the token's user is logged in (login state is shared by all sessions of
  // the application on that token).
  bool user_logged_in() const;

  // C_Login. CKR_USER_ALREADY_LOGGED_IN counts as success; CKR_GENERAL_ERROR is retried
  // twice (20 and 80 ms later: SoftHSM's file race, session.cc). keysvc never calls
  // C_Logout for CKU_USER: another user of the module may share the login.
  void login(CK_USER_TYPE user, const SecretString& pin);

 private:
  const Module* module_;
  std::shared_ptr<const ModuleProfile> profile_;
  std::uint64_t generation_;
  CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
};

// Makes the call f(args...) on `session` (its handle among args) through the module's
// gate, unless the session is stale (then CKR_SESSION_HANDLE_INVALID, no call): see
// Module::call(). Every call on a session goes through here.
template <class F, class... Args>
CK_RV call(const Session& session, Call c, F f, Args&&... args) {
  return session.module().call(session.generation(), c, f, std::forward<Args>(args)...);
}

// call(session, ...), then throws Pkcs11Error(call_name(c), rv) unless CKR_OK.
template <class F, class... Args>
void checked_call(const Session& session, Call c, F f, Args&&... args) {
  throw_unless_ok(c, call(session, c, f, std::forward<Args>(args)...));
}

}  // namespace keysvc::hsm
