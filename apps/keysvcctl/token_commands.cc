// token init: initialise a development token (SoftHSM) in a free slot.
#include <iostream>

#include "cli.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/token.h"
#include "keysvc/hsm/token_uri.h"

namespace keysvcctl {

namespace {

namespace hsm = keysvc::hsm;

// Checks a PIN source's syntax at parse time (exit 2). The message never repeats the
// value: someone may have typed the PIN itself.
CLI::Validator pin_source_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        try {
          (void)hsm::PinSource::parse(value);
          return {};
        } catch (const hsm::ConfigError& e) {
          return e.what();
        }
      },
      "", "PIN source");
}

struct InitOptions {
  std::string module;
  std::string label;
  std::string pin_source;
  std::string so_pin_source;
};

int token_init(const InitOptions& o) {
  check_uri_label(o.label);
  // Read both PINs before touching the token, so a missing source changes nothing.
  hsm::SecretString user_pin = hsm::PinSource::parse(o.pin_source).read();
  hsm::SecretString so_pin = hsm::PinSource::parse(o.so_pin_source).read();

  auto module = hsm::Module::load(o.module);
  for (CK_SLOT_ID slot : module->slots_with_token()) {
    CK_TOKEN_INFO info{};
    hsm::check(module->fn()->C_GetTokenInfo(slot, &info), "C_GetTokenInfo");
    if ((info.flags & CKF_TOKEN_INITIALIZED) && hsm::trim_padded(info.label, sizeof info.label) == o.label)
      throw hsm::ConfigError("a token labelled '" + o.label + "' already exists in " + module->path() +
                             " (slot " + std::to_string(slot) + ")");
  }
  hsm::Token token = hsm::Token::init_free_slot(module, o.label, so_pin, user_pin);
  hsm::TokenInfo info = token.info();
  std::cout << "initialised token '" << info.label << "' (serial " << info.serial << ", slot " << token.slot()
            << ") in " << module->path() << '\n';
  return kExitOk;
}

}  // namespace

void add_token_commands(Cli& cli) {
  CLI::App* token = cli.add_group("token", "Set up PKCS#11 tokens");

  auto o = std::make_shared<InitOptions>();
  CLI::App* init = cli.add_command(
      "init",
      "Initialise a token in a free slot (SoftHSM keeps one) with a label, an SO PIN and a user PIN. "
      "For development tokens; initialise real HSMs with their vendor's tools. Needs no --config",
      [o] { return token_init(*o); }, token);
  init->add_option("--module", o->module, "PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so")
      ->type_name("PATH")
      ->required();
  init->add_option("--label", o->label, "Token label (letters, digits, - _ . ~; at most 32)")
      ->type_name("LABEL")
      ->required();
  init->add_option("--pin-source", o->pin_source, "Where the new user PIN is read from: file:PATH or env:NAME")
      ->type_name("file:PATH|env:NAME")
      ->required()
      ->check(pin_source_validator());
  init->add_option("--so-pin-source", o->so_pin_source,
                   "Where the new security officer PIN is read from: file:PATH or env:NAME")
      ->type_name("file:PATH|env:NAME")
      ->required()
      ->check(pin_source_validator());
}

}  // namespace keysvcctl
