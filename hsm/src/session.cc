#include "keysvc/hsm/session.h"

#include <chrono>
#include <iterator>
#include <thread>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/token.h"

namespace keysvc::hsm {

Session::Session(const Token& token, bool read_write)
    : module_(token.module().get()), profile_(token.profile_ptr()), generation_(module_->generation()) {
  CK_FLAGS flags = CKF_SERIAL_SESSION | (read_write ? CKF_RW_SESSION : 0);
  // The slot first: after a restart, finding it again is what tells whether the token
  // is back. A restart between here and the call makes the call fail as stale (the
  // handle would belong to the new instance, the generation to the old). Nothing was
  // opened then, so the open is made once more in the new generation: a caller racing
  // the maintenance thread's restart (TicketAdapterTest.HsmFailureNeverAbortsAHandshake
  // once failed so) gets a session, and a module restarted twice in that time an error.
  CK_RV rv = call(*this, Call::kOpenSession, fn()->C_OpenSession, token.slot(), flags, nullptr, nullptr, &handle_);
  if (rv == CKR_SESSION_HANDLE_INVALID && stale()) {
    generation_ = module_->generation();
    rv = call(*this, Call::kOpenSession, fn()->C_OpenSession, token.slot(), flags, nullptr, nullptr, &handle_);
  }
  throw_unless_ok(Call::kOpenSession, rv);
}

Session::~Session() {
  // A stale handle belongs to a finalized instance (it may name another session now):
  // never closed. Module::call() refuses it anyway; skipping it keeps the stats clean.
  if (handle_ != CK_INVALID_HANDLE && !stale() && !Module::process_exiting())
    call(*this, Call::kCloseSession, fn()->C_CloseSession, handle_);
}

bool Session::user_logged_in() const {
  CK_SESSION_INFO info{};
  checked_call(*this, Call::kGetSessionInfo, fn()->C_GetSessionInfo, handle_, &info);
  return info.state == CKS_RW_USER_FUNCTIONS || info.state == CKS_RO_USER_FUNCTIONS;
}

void Session::login(CK_USER_TYPE user, const SecretString& pin) {
  // SoftHSM 2 rewrites the token's file on every successful login, and a login in
  // another process that reads it meanwhile fails with CKR_GENERAL_ERROR (seen with
  // keysvcctl rotate next to nginx workers). That code never means a wrong PIN, so a
  // couple of retries cost no PIN attempt; the pauses cover one file write.
  static constexpr std::chrono::milliseconds kRetryPauses[] = {std::chrono::milliseconds(20),
                                                               std::chrono::milliseconds(80)};
  auto p = pin.reveal();
  for (std::size_t retry = 0;; ++retry) {
    CK_RV rv = call(*this, Call::kLogin, fn()->C_Login, handle_, user,
                    reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(p.data())), p.size());
    if (rv == CKR_USER_ALREADY_LOGGED_IN) return;
    if (rv == CKR_GENERAL_ERROR && retry < std::size(kRetryPauses)) {
      std::this_thread::sleep_for(kRetryPauses[retry]);
      continue;
    }
    check(rv, "C_Login");
    return;
  }
}

}  // namespace keysvc::hsm
