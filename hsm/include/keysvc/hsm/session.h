// An open PKCS#11 session (RAII: C_OpenSession ... C_CloseSession).
#pragma once

#include <p11-kit/pkcs11.h>

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/secret.h"

namespace keysvc::hsm {

class Token;

class Session {
 public:
  Session(const Token& token, bool read_write);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  CK_FUNCTION_LIST* fn() const noexcept { return fn_; }
  CK_SESSION_HANDLE handle() const noexcept { return handle_; }
  // Where calls on this session are recorded: its module's stats (see call_stats.h).
  CallStats& stats() const noexcept { return *stats_; }

  // True if the token's user is logged in (login state is shared by all sessions of
  // the application on that token).
  bool user_logged_in() const;

  // C_Login. CKR_USER_ALREADY_LOGGED_IN counts as success. keysvc never calls
  // C_Logout for CKU_USER: another user of the module may share the login.
  void login(CK_USER_TYPE user, const SecretString& pin);

 private:
  CK_FUNCTION_LIST* fn_;
  CallStats* stats_;
  CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
};

}  // namespace keysvc::hsm
