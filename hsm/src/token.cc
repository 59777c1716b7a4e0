#include "keysvc/hsm/token.h"

#include <cstring>
#include <vector>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/session.h"

namespace keysvc::hsm {

namespace {
CK_TOKEN_INFO token_info(const Module& module, CK_SLOT_ID slot) {
  CK_TOKEN_INFO info{};
  checked_call(module.stats(), Call::kGetTokenInfo, module.fn()->C_GetTokenInfo, slot, &info);
  return info;
}
}  // namespace

Token Token::find(std::shared_ptr<Module> module, const TokenUri& uri) {
  std::vector<CK_SLOT_ID> matches;
  std::string present;
  for (CK_SLOT_ID slot : module->slots_with_token()) {
    CK_TOKEN_INFO info = token_info(*module, slot);
    if (!(info.flags & CKF_TOKEN_INITIALIZED)) continue;
    std::string label = trim_padded(info.label, sizeof info.label);
    present += (present.empty() ? "" : ", ") + label;
    if (uri.matches(info)) matches.push_back(slot);
  }
  if (matches.empty()) {
    throw ConfigError("no token matches " + uri.describe() + " in " + module->path() +
                      " (tokens present: " + (present.empty() ? "none" : present) + ")");
  }
  if (matches.size() > 1) {
    throw ConfigError("several tokens match " + uri.describe() + "; add serial= to the URI");
  }
  return Token(std::move(module), matches.front());
}

Token Token::init_free_slot(std::shared_ptr<Module> module, const std::string& label,
                            const SecretString& so_pin, const SecretString& user_pin) {
  for (CK_SLOT_ID slot : module->slots_with_token()) {
    CK_TOKEN_INFO info = token_info(*module, slot);
    if (info.flags & CKF_TOKEN_INITIALIZED) continue;
    CK_UTF8CHAR padded[32];
    std::memset(padded, ' ', sizeof padded);
    std::memcpy(padded, label.data(), std::min(label.size(), sizeof padded));
    auto so = so_pin.reveal();
    checked_call(module->stats(), Call::kInitToken, module->fn()->C_InitToken, slot,
                 reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(so.data())), so.size(), padded);
    // SoftHSM moves the initialised token to a new slot id: find it again by label.
    Token token = find(module, TokenUri::parse("pkcs11:token=" + label));
    Session session(token, /*read_write=*/true);
    session.login(CKU_SO, so_pin);
    auto user = user_pin.reveal();
    checked_call(module->stats(), Call::kInitPIN, module->fn()->C_InitPIN, session.handle(),
                 reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(user.data())), user.size());
    call(module->stats(), Call::kLogout, module->fn()->C_Logout, session.handle());
    return token;
  }
  throw ConfigError("no free slot to initialise a token in " + module->path());
}

TokenInfo Token::info() const {
  CK_TOKEN_INFO raw = token_info(*module_, slot_);
  TokenInfo info;
  info.label = trim_padded(raw.label, sizeof raw.label);
  info.manufacturer = trim_padded(raw.manufacturerID, sizeof raw.manufacturerID);
  info.model = trim_padded(raw.model, sizeof raw.model);
  info.serial = trim_padded(raw.serialNumber, sizeof raw.serialNumber);
  info.initialized = raw.flags & CKF_TOKEN_INITIALIZED;
  info.user_pin_initialized = raw.flags & CKF_USER_PIN_INITIALIZED;
  return info;
}

}  // namespace keysvc::hsm
