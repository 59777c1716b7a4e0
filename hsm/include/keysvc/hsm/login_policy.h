// When a session pool logs in, and when it does not: a PIN the token refused is never
// tried again until its source changes.
//
// A real HSM counts wrong PINs and locks the user after a few (often 3 to 10), and only
// the security officer can unlock it. A pool logs in whenever a new session finds the
// user logged out (start-up, a token reset, a module restart), and keysvc's callers retry
// on their own schedule (a breaker probe every 250 ms, a reload, every nginx worker), so
// a wrong PIN file would otherwise be retried until the token locks.
//
// The policy: when C_Login fails with CKR_PIN_INCORRECT, CKR_PIN_INVALID,
// CKR_PIN_LEN_RANGE, CKR_PIN_EXPIRED or CKR_PIN_LOCKED, it remembers the refused PIN (as
// an HMAC-SHA256 under a random per-process key, both in secure memory) and the source's
// stamp (PinSource::Stamp: for a file its inode, size and times) and counts the
// refusal (the caller gets the error). Every later login reads the source again (no HSM
// call) and is not attempted while both stamp and PIN are the refused ones: it fails at
// once with the same CK_RV, and the first such time one line is reported (report.h). A new PIN, or a rewritten or touched PIN file, gets exactly
// one attempt. So the token sees at most one refused login per change of the PIN source
// per process. Logins are made one at a time, so threads that find the user logged out
// together do not each spend an attempt.
#pragma once

#include <p11-kit/pkcs11.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/secure_memory.h"

namespace keysvc::hsm {

class Session;

// A login the policy did not attempt: the token refused this PIN from this source state
// before. A Pkcs11Error with that refusal's CK_RV ("C_Login: CKR_PIN_INCORRECT (not
// retried: ...)"), so callers treat it as the refusal itself.
class LoginWithheld : public Pkcs11Error {
 public:
  LoginWithheld(CK_RV rv, const std::string& source);
};

class LoginPolicy {
 public:
  explicit LoginPolicy(PinSource pin);
  LoginPolicy(const LoginPolicy&) = delete;
  LoginPolicy& operator=(const LoginPolicy&) = delete;

  // Logs the user in through `session` unless the user already is logged in (login state
  // is shared by all sessions of the application). Reads the PIN from the source, then
  // calls C_Login unless the source still holds a refused PIN (then throws
  // LoginWithheld). Throws ConfigError for an unreadable source, Pkcs11Error for a
  // failed C_Login.
  void log_in(Session& session);

  // The CK_RVs of C_Login that say the PIN itself is wrong, unusable or locked.
  static bool is_pin_refusal(CK_RV rv) noexcept;

  // C_Login calls made / refused by the token with a PIN refusal / not made because the
  // PIN was refused before, since the policy was made (for metrics).
  std::uint64_t attempts() const noexcept { return attempts_.load(std::memory_order_relaxed); }
  std::uint64_t refusals() const noexcept { return refusals_.load(std::memory_order_relaxed); }
  std::uint64_t withheld() const noexcept { return withheld_.load(std::memory_order_relaxed); }

  const PinSource& source() const noexcept { return pin_; }

 private:
  using Fingerprint = SecureBuffer<32, OnFork::kKeep>;
  void fingerprint(const SecretString& pin, Fingerprint& out) const;

  PinSource pin_;
  std::mutex mutex_;  // one login at a time; guards refused_
  SecureBuffer<32, OnFork::kKeep> key_;  // HMAC key of the fingerprints: random, per process
  struct Refused {
    PinSource::Stamp stamp;
    Fingerprint pin;
    CK_RV rv;
    bool reported;  // the one report line is out
  };
  std::optional<Refused> refused_;
  std::atomic<std::uint64_t> attempts_{0}, refusals_{0}, withheld_{0};
};

}  // namespace keysvc::hsm
