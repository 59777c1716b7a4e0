// This process's session-object copies of the generation keys (hsm.session_copies).
//
// Per-ticket derivation signs with session copies instead of the token objects when a
// generation's keys allow it (made with rotation.copyable_keys): SoftHSM spends about
// 35 us per HMAC on a token-object key and about 11 us on a session copy
// (docs/PERFORMANCE.md, which also states what copyable keys expose).
//
// The cache owns one dedicated session (not leased from the pool, so no pool discard
// can take the copies with it) in which every copy is made. Copies are:
//   - made when a generation first appears in a reloaded ring (usable, not revoked,
//     still decrypting at now - clock_skew);
//   - dropped when the generation leaves the ring, is revoked or expires: destroyed at
//     the next reload after that (a handshake may still hold the previous ring snapshot;
//     deferring keeps a handle from being reused under it);
//   - re-made when the token forgot them: the holder session was closed or the user
//     logged out (SoftHSM destroys private session objects on logout), or the token's
//     handle for the source key changed. Derivation then fails with a stale handle,
//     TicketKeyService reloads, and attach() finds the copy gone and copies again.
// A generation whose keys the token refuses to copy (not COPYABLE) is remembered and
// keeps deriving with its token keys; any other failure is retried at the next reload.
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "keysvc/hsm/session.h"
#include "keysvc/hsm/token.h"
#include "keysvc/key_ring.h"

namespace keysvc {

// The label every session copy carries (never the token keys' labels, so a search for
// those never finds a copy).
inline constexpr char kSessionCopyLabel[] = "keysvc-session-copy";

class SessionKeyCache {
 public:
  // Opens no session yet: the first attach() does, once the pool has logged in.
  explicit SessionKeyCache(hsm::Token token);
  ~SessionKeyCache();  // closing the holder session destroys every copy
  SessionKeyCache(const SessionKeyCache&) = delete;
  SessionKeyCache& operator=(const SessionKeyCache&) = delete;

  // Returns `ring` with enc_copy / mac_copy set on every generation that has live copies,
  // after making, re-making and dropping copies as described above. Never throws: on a
  // token failure the generations concerned keep their token keys.
  KeyRing attach(const KeyRing& ring, std::int64_t now, std::int64_t clock_skew) noexcept;

  // In a child process right after fork(): forgets the holder session and every copy
  // without a PKCS#11 call (they are the parent's); the next attach() copies again.
  void forget_after_fork() noexcept;

  struct Stats {
    std::uint64_t made = 0;     // copy pairs made (including re-made)
    std::uint64_t dropped = 0;  // copy pairs dropped (generation gone, expired, revoked)
    std::uint64_t refused = 0;  // generations whose keys the token would not copy
    std::size_t live = 0;       // copy pairs currently held
  };
  Stats stats() const;

 private:
  struct Copies {
    CK_OBJECT_HANDLE enc_source = CK_INVALID_HANDLE, mac_source = CK_INVALID_HANDLE;
    CK_OBJECT_HANDLE enc = CK_INVALID_HANDLE, mac = CK_INVALID_HANDLE;
  };
  // The holder session, opened again if it died (its copies died with it).
  hsm::Session& holder();
  bool alive(const Copies& c);
  std::optional<Copies> copy(const Generation& g);
  void retire(const Copies& c);
  void destroy_retired() noexcept;

  mutable std::mutex mutex_;
  hsm::Token token_;
  std::unique_ptr<hsm::Session> holder_;
  std::map<KeyName, Copies> copies_;
  std::set<KeyName> refused_;
  std::vector<CK_OBJECT_HANDLE> retired_;  // destroyed at the next attach()
  Stats stats_;
};

}  // namespace keysvc
