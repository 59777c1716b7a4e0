// A loaded PKCS#11 module (dlopen + C_GetFunctionList + C_Initialize).
//
// A module is loaded once per process and path, and is never unloaded. It is finalized
// only by restart() (C_Finalize + C_Initialize), and only while keysvc is its only user
// in the process: other users (libp11, an nginx module, OpenSSL's pkcs11 engine) may
// hold sessions, and C_Finalize would break them. C_Initialize is called with
// CKF_OS_LOCKING_OK, and CKR_CRYPTOKI_ALREADY_INITIALIZED (someone else initialised it
// first) is accepted -- and makes keysvc a user that never restarts the module.
//
// The call gate. PKCS#11 leaves C_Finalize concurrent with any other call undefined, so
// every call keysvc makes through the module (call() below, and call(Session&, ...) in
// session.h) passes a gate: an atomic in-flight count with a "closed" bit. restart()
// closes it, waits (bounded) until no call is in flight, bumps the module's generation,
// finalizes, initializes and reopens it. A call that finds the gate closed waits for it
// to reopen, at most kGateWait (a planned restart, such as a rescan on a token that
// needs one, takes a few milliseconds); if it is still closed then, the call is not made
// and returns CKR_CRYPTOKI_NOT_INITIALIZED (the module is between C_Finalize and
// C_Initialize). Passing the gate costs two atomic read-modify-writes on one shared
// cache line (docs/RELIABILITY.md has the measured figure).
//
// Generations. Session and object handles belong to the module instance that issued
// them; after a restart the same numbers may name other sessions and objects. Each
// restart bumps generation(). A Session remembers the generation it was opened in: a
// call on it in a later generation is not made (it fails with
// CKR_SESSION_HANDLE_INVALID, a dead session) and its destructor does not close the old
// handle. Object handles are the holder's business: keysvc tags its key ring with the
// generation it was read in.
#pragma once

#include <p11-kit/pkcs11.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "keysvc/hsm/call_stats.h"

namespace keysvc::hsm {

class Module {
 public:
  // Loads the module at `path`, or returns the instance already loaded from it.
  // Throws ConfigError if the file cannot be loaded or has no C_GetFunctionList, and
  // Pkcs11Error if C_Initialize fails.
  static std::shared_ptr<Module> load(const std::string& path);

  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The module's function list; valid for the life of the process.
  CK_FUNCTION_LIST* fn() const noexcept { return fn_; }
  const std::string& path() const noexcept { return path_; }

  // Counts and latencies of every PKCS#11 call keysvc made through this module (all
  // sessions, all threads) since it was loaded.
  CallStats& stats() const noexcept { return *stats_; }

  // Slots that currently hold a token.
  std::vector<CK_SLOT_ID> slots_with_token() const;

  // True once the process has started exiting (exit() or return from main). From then
  // on the module's own static objects may already be destroyed, so keysvc makes no
  // more PKCS#11 calls (closing sessions at exit would crash inside the module).
  static bool process_exiting() noexcept;

  // Re-runs C_Initialize in a child after fork(): PKCS#11 state does not survive fork.
  // A module that answers CKR_CRYPTOKI_ALREADY_INITIALIZED (it kept the parent's state)
  // is finalized and initialized again. Forgets the calls other threads of the parent had
  // in flight (they do not exist in the child) and bumps generation(): every session and
  // object handle read in the parent is stale here (sessions refuse calls, the key ring
  // is read again); the parent's sessions are still the caller's to forget without
  // closing them (SessionPool::forget_after_fork). Only call in a freshly forked child
  // before any other use of the module. Throws Pkcs11Error if C_Initialize fails.
  void reinitialize_after_fork();

  // The module instance's generation: 1 after load(), bumped by every restart().
  // Handles issued in one generation are meaningless in another.
  std::uint64_t generation() const noexcept { return generation_.load(std::memory_order_acquire); }

  // Makes the PKCS#11 call f(args...) through the gate, records it in stats() as `c`
  // and returns its CK_RV. If the gate is closed (a restart is under way) the call is
  // not made and CKR_CRYPTOKI_NOT_INITIALIZED is returned. If `generation` is not
  // kAnyGeneration and differs from the current one (the handles in args belong to an
  // earlier instance), the call is not made and CKR_SESSION_HANDLE_INVALID is returned.
  // Refused calls are not recorded in stats().
  static constexpr std::uint64_t kAnyGeneration = 0;
  template <class F, class... Args>
  CK_RV call(std::uint64_t generation, Call c, F f, Args&&... args) const {
    if (!enter()) return CKR_CRYPTOKI_NOT_INITIALIZED;
    const Leave leave{this};
    if (generation != kAnyGeneration && generation != this->generation()) return CKR_SESSION_HANDLE_INVALID;
    return hsm::call(*stats_, c, f, std::forward<Args>(args)...);
  }

  // Whether keysvc is the only user of the module in this process: its own
  // C_Initialize succeeded (nobody had initialised the module before) and no other
  // user was declared with add_other_user().
  bool only_user() const noexcept;
  // Declares another user of the module in this process (libp11 loading the same
  // module for a TLS private key): from then on the module is never finalized.
  void add_other_user() noexcept { other_users_ = true; }

  // Restarts the module: C_Finalize + C_Initialize, for a network HSM's client module
  // that never reconnects by itself after losing its server (p11-kit-client.so), or a
  // module that reads its token list only at C_Initialize. Closes the call gate and
  // waits at most `max_wait` for the calls in flight to return; if one is still in
  // flight then (a hung call), gives up and returns false without finalizing. Also
  // returns false, doing nothing, unless only_user(). On success every session and
  // object handle of the previous generation is dead (no C_CloseSession is made for
  // them), the login is gone, and slot ids may have changed (Token re-finds its slot).
  // Throws Pkcs11Error if C_Initialize fails (the gate is reopened; calls then fail
  // with the module's CKR_CRYPTOKI_NOT_INITIALIZED until a later restart succeeds).
  // The C_Initialize of a network HSM's client that cannot reach its server may
  // succeed with no slot: restart again later.
  bool restart(std::chrono::milliseconds max_wait);

  // Makes the module list its tokens again (restart()) before any session exists. Some modules
  // read their token list only at C_Initialize: SoftHSM 2 skips a token whose files
  // another process is rewriting at that moment (a login, a new object) and then never
  // sees it for the life of the process. Only done while keysvc is the module's only
  // user in this process (only_user()) and no session was ever opened through it, since
  // C_Finalize would break anyone else's sessions. Returns false, doing nothing,
  // otherwise. Throws Pkcs11Error if C_Initialize then fails.
  bool rescan_tokens();
  // Whether rescan_tokens() would rescan now.
  bool may_rescan_tokens() const;

 private:
  Module(std::string path, void* handle, CK_FUNCTION_LIST* fn);
  void initialize();
  // The gate (see the top of this file). enter() is true if the call may be made, and
  // must then be paired with one leave().
  static constexpr std::uint64_t kClosed = std::uint64_t{1} << 63;
  static constexpr std::chrono::milliseconds kGateWait{1000};
  bool enter() const noexcept {
    if ((in_flight_.fetch_add(1, std::memory_order_acquire) & kClosed) == 0) return true;
    leave();
    return enter_when_open();
  }
  // The slow path: waits up to kGateWait for a restart to reopen the gate.
  bool enter_when_open() const noexcept;
  void leave() const noexcept { in_flight_.fetch_sub(1, std::memory_order_release); }
  struct Leave {
    const Module* module;
    ~Leave() { module->leave(); }
  };

  std::string path_;
  void* handle_;  // dlopen handle, intentionally never closed
  CK_FUNCTION_LIST* fn_;
  std::atomic<bool> initialized_by_keysvc_{false};  // our C_Initialize returned CKR_OK
  std::atomic<bool> other_users_{false};            // add_other_user() was called
  std::unique_ptr<CallStats> stats_ = std::make_unique<CallStats>();
  mutable std::atomic<std::uint64_t> in_flight_{0};  // calls in the module | kClosed
  std::atomic<std::uint64_t> generation_{1};
  std::mutex restart_mutex_;  // one restart at a time
};

// Module::call() for a call that uses no session handle (slot and token functions);
// throws Pkcs11Error(call_name(c), rv) unless it returned CKR_OK.
template <class F, class... Args>
void checked_call(const Module& module, Call c, F f, Args&&... args) {
  throw_unless_ok(c, module.call(Module::kAnyGeneration, c, f, std::forward<Args>(args)...));
}

}  // namespace keysvc::hsm
