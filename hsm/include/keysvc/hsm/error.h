// Typed errors of the PKCS#11 layer.
//
// Every failing PKCS#11 call surfaces as a Pkcs11Error that carries the function name
// and the CK_RV, and prints as "C_SignInit: CKR_KEY_HANDLE_INVALID". Problems found
// before any PKCS#11 call (a malformed URI, an unreadable PIN source, a module that
// does not load) are ConfigErrors. Neither ever carries key bytes or PINs.
#pragma once

#include <p11-kit/pkcs11.h>

#include <stdexcept>
#include <string>

namespace keysvc::hsm {

// The CKR_* name of a return value ("CKR_PIN_INCORRECT"), or "CKR_0x..." if unknown.
std::string rv_name(CK_RV rv);

// Base of every error thrown by the hsm layer.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A configuration problem found before (or instead of) talking to the token:
// bad URI, bad PIN source, module that cannot be loaded, no matching token.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// The token lacks something keysvc needs (a mechanism, a function, an attribute), or
// cannot do it the way asked here (a server making keys on a token whose keys come from
// the vendor's tool). The message is one line naming the missing capability.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

// A PKCS#11 function returned something other than CKR_OK.
class Pkcs11Error : public Error {
 public:
  Pkcs11Error(std::string operation, CK_RV rv);

  CK_RV rv() const noexcept { return rv_; }
  const std::string& operation() const noexcept { return operation_; }

  // True for the return values after which the session cannot be used again and must
  // be replaced: CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN,
  // CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT.
  bool session_is_dead() const noexcept { return rv_kills_session(rv_); }

  static bool rv_kills_session(CK_RV rv) noexcept;

 protected:
  // "operation: CKR_... (detail)", for errors that need to say more than the code.
  Pkcs11Error(std::string operation, CK_RV rv, const std::string& detail);

 private:
  std::string operation_;
  CK_RV rv_;
};

// Throws Pkcs11Error(operation, rv) unless rv == CKR_OK.
inline void check(CK_RV rv, const char* operation) {
  if (rv != CKR_OK) throw Pkcs11Error(operation, rv);
}

}  // namespace keysvc::hsm
