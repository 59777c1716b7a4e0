// Before a process reads the token again to see what other processes changed (a
// server's periodic ring rescan, a rescan for an unknown key name, keysvcctl rotate
// --every): on tokens that show other processes' changes only after a re-initialise
// (ModuleProfile::rescan_needs_reinitialize: tpm2-pkcs11), restart the module -- but
// only if the token may have changed since this process last initialised it (the
// profile's store_file differs in modification time, size or inode, or was written in
// the last 2 s, when an unchanged time proves nothing), so a quiet token costs a stat(2)
// per rescan rather than a re-initialise. The first scan after
// construction always re-initialises (what changed before it is unknown).
//
//   hsm::RescanPreparer prepare(pool.token());   // once, after the token is found
//   ...
//   if (prepare.before_scan(100ms)) { /* handles read before are void */ }
//   ring = load(...);
//
// Restarting is Module::restart(): only while keysvc is the module's only user in the
// process, and never under a call still in flight after `max_wait`.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <mutex>

#include "keysvc/hsm/token.h"

namespace keysvc::hsm {

class RescanPreparer {
 public:
  explicit RescanPreparer(Token token);

  // True if the token needs no re-initialise to show other processes' changes.
  bool sees_changes_without_restart() const noexcept { return !token_.profile().rescan_needs_reinitialize; }

  // Restarts the module if this token needs it and may have changed since the last
  // (re)initialise. Returns true if it restarted the module (every handle read before is
  // void); false if nothing was needed, or the restart was not possible now (another
  // user of the module, a call hung in it: the scan then sees the old view). `max_wait`
  // bounds the wait for calls in flight and, separately, the retries of a C_Initialize
  // that failed; throws Pkcs11Error if it still fails then.
  bool before_scan(std::chrono::milliseconds max_wait);

 private:
  struct Marker {
    bool valid = false;
    struct timespec mtime {};
    off_t size = 0;
    ino_t inode = 0;
    bool operator==(const Marker& o) const noexcept;
  };
  Marker read_marker() const;
  // Whether `m` was written so lately that an unchanged marker proves nothing.
  static bool recently_written(const Marker& m);

  Token token_;
  std::mutex mutex_;
  Marker seen_;  // the store file as of the last re-initialise; invalid: none yet
};

}  // namespace keysvc::hsm
