#include "keysvc/hsm/session.h"

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/token.h"

namespace keysvc::hsm {

Session::Session(const Token& token, bool read_write)
    : fn_(token.module()->fn()), stats_(&token.module()->stats()) {
  CK_FLAGS flags = CKF_SERIAL_SESSION | (read_write ? CKF_RW_SESSION : 0);
  checked_call(*stats_, Call::kOpenSession, fn_->C_OpenSession, token.slot(), flags, nullptr, nullptr, &handle_);
}

Session::~Session() {
  if (handle_ != CK_INVALID_HANDLE && !Module::process_exiting()) call(*stats_, Call::kCloseSession, fn_->C_CloseSession, handle_);
}

bool Session::user_logged_in() const {
  CK_SESSION_INFO info{};
  checked_call(*stats_, Call::kGetSessionInfo, fn_->C_GetSessionInfo, handle_, &info);
  return info.state == CKS_RW_USER_FUNCTIONS || info.state == CKS_RO_USER_FUNCTIONS;
}

void Session::login(CK_USER_TYPE user, const SecretString& pin) {
  auto p = pin.reveal();
  CK_RV rv = call(*stats_, Call::kLogin, fn_->C_Login, handle_, user,
                  reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(p.data())), p.size());
  if (rv == CKR_USER_ALREADY_LOGGED_IN) return;
  check(rv, "C_Login");
}

}  // namespace keysvc::hsm
