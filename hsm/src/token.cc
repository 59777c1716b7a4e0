#include "keysvc/hsm/token.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <iterator>
#include <thread>
#include <vector>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/session.h"

namespace keysvc::hsm {

namespace {
CK_TOKEN_INFO token_info(const Module& module, CK_SLOT_ID slot) {
  CK_TOKEN_INFO info{};
  checked_call(module, Call::kGetTokenInfo, module.fn()->C_GetTokenInfo, slot, &info);
  return info;
}

struct Matches {
  std::vector<CK_SLOT_ID> slots;
  std::string present;  // labels of the initialised tokens, for the error message
};

Matches matching_slots(const Module& module, const TokenUri& uri) {
  Matches m;
  for (CK_SLOT_ID slot : module.slots_with_token()) {
    CK_TOKEN_INFO info = token_info(module, slot);
    if (!(info.flags & CKF_TOKEN_INITIALIZED)) continue;
    std::string label = trim_padded(info.label, sizeof info.label);
    m.present += (m.present.empty() ? "" : ", ") + label;
    if (uri.matches(info)) m.slots.push_back(slot);
  }
  return m;
}
}  // namespace

Token Token::find(std::shared_ptr<Module> module, const TokenUri& uri) {
  // A token missing (or failing C_GetTokenInfo) may be one the module skipped because
  // another process was rewriting its files when the module scanned them (SoftHSM 2,
  // Module::rescan_tokens). Look again a few times, while that is safe, before saying
  // it is not there. The waits cover a file write; a wrong URI costs them once (~0.3 s).
  static constexpr std::chrono::milliseconds kRescanWaits[] = {std::chrono::milliseconds(25),
                                                               std::chrono::milliseconds(75),
                                                               std::chrono::milliseconds(200)};
  for (std::size_t rescans = 0;; ++rescans) {
    Matches m;
    std::exception_ptr scan_error;
    try {
      m = matching_slots(*module, uri);
    } catch (const Pkcs11Error&) {
      scan_error = std::current_exception();
    }
    if (!scan_error && m.slots.size() > 1) {
      throw ConfigError("several tokens match " + uri.describe() + "; add serial= to the URI");
    }
    if (!scan_error && m.slots.size() == 1) return Token(std::move(module), uri, m.slots.front());
    if (rescans < std::size(kRescanWaits) && module->may_rescan_tokens()) {
      std::this_thread::sleep_for(kRescanWaits[rescans]);
      if (module->rescan_tokens()) continue;
    }
    if (scan_error) std::rethrow_exception(scan_error);
    throw ConfigError("no token matches " + uri.describe() + " in " + module->path() +
                      " (tokens present: " + (m.present.empty() ? "none" : m.present) + ")");
  }
}

Token::Token(std::shared_ptr<Module> module, TokenUri uri, CK_SLOT_ID slot)
    : module_(std::move(module)), uri_(std::move(uri)), place_(std::make_shared<Place>()) {
  // The generation the slot was found in: read after the search, so a restart during
  // it makes the first slot() look again.
  place_->generation = module_->generation();
  place_->slot = slot;
  CK_INFO info{};
  checked_call(*module_, Call::kGetInfo, module_->fn()->C_GetInfo, &info);
  profile_ = std::make_shared<const ModuleProfile>(profile_of(info, token_info(*module_, slot)));
}

CK_SLOT_ID Token::slot() const {
  const std::uint64_t now = module_->generation();
  std::lock_guard lock(place_->mutex);
  if (place_->generation == now) return place_->slot;
  // A restart since the slot was found: ids may have changed. One search, no rescan
  // (that is Token::find's start-up business); several matches cannot appear here
  // unless the HSM changed, and the first one is as good a guess as any.
  Matches m = matching_slots(*module_, uri_);
  if (m.slots.empty()) throw Pkcs11Error("C_GetSlotList (" + uri_.describe() + " not present)", CKR_TOKEN_NOT_PRESENT);
  place_->slot = m.slots.front();
  place_->generation = now;
  return place_->slot;
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
    checked_call(*module, Call::kInitToken, module->fn()->C_InitToken, slot,
                 reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(so.data())), so.size(), padded);
    // SoftHSM moves the initialised token to a new slot id: find it again by label.
    Token token = find(module, TokenUri::parse("pkcs11:token=" + label));
    Session session(token, /*read_write=*/true);
    session.login(CKU_SO, so_pin);
    auto user = user_pin.reveal();
    checked_call(session, Call::kInitPIN, module->fn()->C_InitPIN, session.handle(),
                 reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(user.data())), user.size());
    call(session, Call::kLogout, module->fn()->C_Logout, session.handle());
    return token;
  }
  throw ConfigError("no free slot to initialise a token in " + module->path());
}

TokenInfo Token::info() const {
  CK_TOKEN_INFO raw = token_info(*module_, slot());
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
