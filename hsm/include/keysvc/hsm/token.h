// The token keysvc works with: the slot whose token matches a TokenUri.
#pragma once

#include <p11-kit/pkcs11.h>

#include <memory>
#include <string>

#include "keysvc/hsm/module.h"
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
  CK_SLOT_ID slot() const noexcept { return slot_; }
  TokenInfo info() const;

 private:
  Token(std::shared_ptr<Module> module, CK_SLOT_ID slot) : module_(std::move(module)), slot_(slot) {}
  std::shared_ptr<Module> module_;
  CK_SLOT_ID slot_;
};

}  // namespace keysvc::hsm
