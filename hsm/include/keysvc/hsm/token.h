// The token keysvc works with: the slot whose token matches a TokenUri.
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "keysvc/hsm/module.h"
#include "keysvc/hsm/module_profile.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/hsm/token_uri.h"

namespace keysvc::hsm {

struct TokenInfo {
  std::string label;
  std::string manufacturer;
  std::string model;
  std::string serial;
  bool initialized = false;
  bool user_pin_initialized = false;
};

class Token {
 public:
  // Finds the one slot whose token matches `uri`. Throws ConfigError naming the URI and
  // the labels of the tokens present if none matches, or if several do.
  static Token find(std::shared_ptr<Module> module, const TokenUri& uri);

  // Initialises the token in the first slot with an uninitialised token (SoftHSM keeps
  // one free), sets its label and user PIN, and returns it. For development tokens;
  // real HSMs are initialised with their vendor's tools.
  static Token init_free_slot(std::shared_ptr<Module> module, const std::string& label,
                              const SecretString& so_pin, const SecretString& user_pin);

  const std::shared_ptr<Module>& module() const noexcept { return module_; }
  // The token's slot. After a Module::restart() slot ids may have changed: the first
  // call in a new module generation finds the token again by its URI (copies of a
  // Token share the answer). Throws Pkcs11Error(CKR_TOKEN_NOT_PRESENT) if no slot then
  // holds a matching token (a network HSM's client that restarted while its server was
  // down sees no slot at all), or whatever the slot list calls fail with.
  CK_SLOT_ID slot() const;
  TokenInfo info() const;
  // What keysvc knows of this token's implementation (module_profile.h), found when the
  // token was found; shared by every copy of the Token and every Session on it.
  const ModuleProfile& profile() const noexcept { return *profile_; }
  const std::shared_ptr<const ModuleProfile>& profile_ptr() const noexcept { return profile_; }

 private:
  // Where the token is, per module generation; shared by every copy of the Token.
  struct Place {
    std::mutex mutex;
    std::uint64_t generation = 0;
    CK_SLOT_ID slot = 0;
  };
  Token(std::shared_ptr<Module> module, TokenUri uri, CK_SLOT_ID slot);
  std::shared_ptr<Module> module_;
  TokenUri uri_;
  std::shared_ptr<Place> place_;
  std::shared_ptr<const ModuleProfile> profile_;
};

}  // namespace keysvc::hsm
