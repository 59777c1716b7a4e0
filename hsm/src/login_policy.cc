#include "keysvc/hsm/login_policy.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <utility>

#include "keysvc/hsm/report.h"
#include "keysvc/hsm/session.h"

namespace keysvc::hsm {

LoginWithheld::LoginWithheld(CK_RV rv, const std::string& source)
    : Pkcs11Error("C_Login", rv,
                  "not retried: the token refused the PIN from " + source +
                      " and the source has not changed since") {}

LoginPolicy::LoginPolicy(PinSource pin) : pin_(std::move(pin)) {
  if (RAND_bytes(key_.data(), static_cast<int>(key_.size())) != 1)
    throw ConfigError("no randomness for the login policy's key (RAND_bytes failed)");
}

bool LoginPolicy::is_pin_refusal(CK_RV rv) noexcept {
  switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
      return true;
    default:
      return false;
  }
}

void LoginPolicy::fingerprint(const SecretString& pin, Fingerprint& out) const {
  unsigned int len = 0;
  auto text = pin.reveal();
  if (HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), reinterpret_cast<const unsigned char*>(text.data()),
           text.size(), out.data(), &len) == nullptr ||
      len != out.size())
    throw ConfigError("cannot fingerprint the PIN (HMAC-SHA256 failed)");
}

void LoginPolicy::log_in(Session& session) {
  std::lock_guard lock(mutex_);
  // Another thread may have logged in while this one waited for the lock.
  if (session.user_logged_in()) return;
  PinSource::Stamp stamp;
  SecretString pin = pin_.read(&stamp);
  Fingerprint print;
  fingerprint(pin, print);
  if (refused_ && refused_->stamp == stamp && CRYPTO_memcmp(refused_->pin.data(), print.data(), print.size()) == 0) {
    withheld_.fetch_add(1, std::memory_order_relaxed);
    // Said once, when a login is first held back: the refusal itself reached the caller
    // as its error (at start-up the one line a server prints before it exits).
    if (!std::exchange(refused_->reported, true))
      report(ReportLevel::kError, "the token refused the PIN from " + pin_.describe() + " (" +
                                      rv_name(refused_->rv) +
                                      "): no login is attempted with it again until that source changes");
    throw LoginWithheld(refused_->rv, pin_.describe());
  }
  attempts_.fetch_add(1, std::memory_order_relaxed);
  try {
    session.login(CKU_USER, pin);
  } catch (const Pkcs11Error& e) {
    if (!is_pin_refusal(e.rv())) throw;
    refusals_.fetch_add(1, std::memory_order_relaxed);
    refused_.emplace(Refused{stamp, std::move(print), e.rv(), false});
    throw;
  }
  refused_.reset();
}

}  // namespace keysvc::hsm
