#include "keysvc/session_key_cache.h"

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/session_copy.h"
#include "keysvc/log.h"

namespace keysvc {

SessionKeyCache::SessionKeyCache(hsm::Token token) : token_(std::move(token)) {}

SessionKeyCache::~SessionKeyCache() = default;

hsm::Session& SessionKeyCache::holder() {
  if (holder_) {
    try {
      holder_->user_logged_in();  // C_GetSessionInfo: is the session still there?
      return *holder_;
    } catch (const hsm::Pkcs11Error& e) {
      if (!e.session_is_dead()) throw;
      holder_.reset();
      copies_.clear();  // they were session objects of that session
      retired_.clear();
    }
  }
  // Login state is per application: the pool has logged in before any reload.
  holder_ = std::make_unique<hsm::Session>(token_, /*read_write=*/false);
  return *holder_;
}

bool SessionKeyCache::alive(const Copies& c) {
  return hsm::object_exists(holder(), c.enc) && hsm::object_exists(holder(), c.mac);
}

std::optional<SessionKeyCache::Copies> SessionKeyCache::copy(const Generation& g) {
  Copies c{g.enc_key, g.mac_key};
  try {
    c.enc = hsm::copy_to_session(holder(), g.enc_key, kSessionCopyLabel);
    // A derivation-2 generation has one key (enc_key == mac_key): one copy.
    c.mac = g.mac_key == g.enc_key ? c.enc : hsm::copy_to_session(holder(), g.mac_key, kSessionCopyLabel);
    stats_.made++;
    return c;
  } catch (const hsm::Pkcs11Error& e) {
    retire(c);
    if (hsm::copy_refused(e.rv())) {
      refused_.insert(g.name);
      stats_.refused++;
      logger()->info("generation {}: keys not copyable (made without rotation.copyable_keys), deriving with the "
                     "token keys",
                     to_hex(g.name));
    } else {
      logger()->warn("generation {}: session copy failed, deriving with the token keys: {}", to_hex(g.name),
                     e.what());
    }
    return std::nullopt;
  }
}

void SessionKeyCache::retire(const Copies& c) {
  if (c.enc != CK_INVALID_HANDLE) retired_.push_back(c.enc);
  if (c.mac != CK_INVALID_HANDLE && c.mac != c.enc) retired_.push_back(c.mac);
}

void SessionKeyCache::destroy_retired() noexcept {
  for (CK_OBJECT_HANDLE h : retired_) {
    try {
      if (holder_) hsm::destroy_object(*holder_, h);
    } catch (const std::exception&) {
      // Already gone with its session or the login: nothing left to destroy.
    }
  }
  retired_.clear();
}

KeyRing SessionKeyCache::attach(const KeyRing& ring, std::int64_t now, std::int64_t clock_skew) noexcept {
  std::lock_guard lock(mutex_);
  std::vector<Generation> generations = ring.generations();
  try {
    destroy_retired();  // the rings that named them were replaced a reload ago
    std::map<KeyName, Copies> kept;
    for (Generation& g : generations) {
      if (!KeyRing::decrypts(g, now, clock_skew) || refused_.count(g.name)) continue;
      auto it = copies_.find(g.name);
      if (it != copies_.end()) {
        Copies c = it->second;
        copies_.erase(it);
        if (c.enc_source == g.enc_key && c.mac_source == g.mac_key && alive(c)) {
          kept[g.name] = c;
        } else {
          retire(c);  // the token forgot the copy, or the source handle changed: copy again
        }
      }
      if (!kept.count(g.name))
        if (auto c = copy(g)) kept[g.name] = *c;
      if (auto k = kept.find(g.name); k != kept.end()) {
        g.enc_copy = k->second.enc;
        g.mac_copy = k->second.mac;
      }
    }
    // Whatever is left belongs to generations gone from the ring, expired or revoked.
    for (const auto& [name, c] : copies_) {
      retire(c);
      stats_.dropped++;
    }
    copies_ = std::move(kept);
    std::erase_if(refused_, [&](const KeyName& name) { return ring.find(name) == nullptr; });
  } catch (const std::exception& e) {
    // The holder session could not be opened or checked: derive with the token keys
    // until the next reload. Copies already attached stay valid or fail as stale.
    logger()->warn("session key copies unavailable, deriving with the token keys: {}", e.what());
    for (Generation& g : generations) g.enc_copy = g.mac_copy = CK_INVALID_HANDLE;
    for (const auto& [name, c] : copies_) retire(c);
    copies_.clear();
  }
  stats_.live = copies_.size();
  return KeyRing(std::move(generations));
}

SessionKeyCache::Stats SessionKeyCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void SessionKeyCache::forget_after_fork() noexcept {
  std::lock_guard lock(mutex_);
  (void)holder_.release();  // the parent's session: never closed from here
  copies_.clear();
  retired_.clear();
  stats_.live = 0;
}

}  // namespace keysvc
