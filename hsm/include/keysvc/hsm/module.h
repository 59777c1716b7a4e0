// A loaded PKCS#11 module (dlopen + C_GetFunctionList + C_Initialize).
//
// A module is loaded once per process and path, and is never finalized or unloaded:
// other users of the same module in the process (libp11, an nginx module, OpenSSL's
// pkcs11 engine) may hold sessions, and C_Finalize would break them. C_Initialize is
// called with CKF_OS_LOCKING_OK, and CKR_CRYPTOKI_ALREADY_INITIALIZED (someone else
// initialised it first) is accepted.
#pragma once

#include <p11-kit/pkcs11.h>

#include <atomic>
#include <memory>
#include <string>
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
  // Only call in a freshly forked child before any other use of the module.
  void reinitialize_after_fork();

  // Makes the module list its tokens again (C_Finalize + C_Initialize). Some modules
  // read their token list only at C_Initialize: SoftHSM 2 skips a token whose files
  // another process is rewriting at that moment (a login, a new object) and then never
  // sees it for the life of the process. Only done while keysvc is the module's only
  // user in this process -- keysvc's own C_Initialize succeeded and no session was ever
  // opened through it -- since C_Finalize would break anyone else's sessions. Returns
  // false, doing nothing, otherwise. Throws Pkcs11Error if C_Initialize then fails.
  bool rescan_tokens();
  // Whether rescan_tokens() would rescan now.
  bool may_rescan_tokens() const;

 private:
  Module(std::string path, void* handle, CK_FUNCTION_LIST* fn);
  void initialize();

  std::string path_;
  void* handle_;  // dlopen handle, intentionally never closed
  CK_FUNCTION_LIST* fn_;
  std::atomic<bool> initialized_by_keysvc_{false};  // our C_Initialize returned CKR_OK
  std::unique_ptr<CallStats> stats_ = std::make_unique<CallStats>();
};

}  // namespace keysvc::hsm
