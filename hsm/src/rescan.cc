#include "keysvc/hsm/rescan.h"

#include <thread>

#include <time.h>

#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

bool RescanPreparer::Marker::operator==(const Marker& o) const noexcept {
  return valid == o.valid && mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec && size == o.size &&
         inode == o.inode;
}

RescanPreparer::RescanPreparer(Token token)
    : token_(std::move(token)) {}

RescanPreparer::Marker RescanPreparer::read_marker() const {
  Marker m;
  const std::string& file = token_.profile().store_file;
  struct stat st {};
  if (file.empty() || ::stat(file.c_str(), &st) != 0) return m;  // invalid: always restart
  m.valid = true;
  m.mtime = st.st_mtim;
  m.size = st.st_size;
  m.inode = st.st_ino;
  return m;
}

bool RescanPreparer::recently_written(const Marker& m) {
  // File times advance in coarse steps (the kernel's clock tick, a few ms), so a second
  // write within the step of the one seen, leaving the size alike, looks like no write:
  // the same reason git distrusts "racily clean" files. A marker younger than this is
  // not trusted; a quiet token is older and costs a stat(2) per scan.
  static constexpr std::int64_t kRacyNs = 2'000'000'000;
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const std::int64_t age = (now.tv_sec - m.mtime.tv_sec) * 1'000'000'000LL + (now.tv_nsec - m.mtime.tv_nsec);
  return age < kRacyNs;
}

bool RescanPreparer::before_scan(std::chrono::milliseconds max_wait) {
  if (sees_changes_without_restart()) return false;
  std::lock_guard lock(mutex_);
  Module& module = *token_.module();
  // Read before the restart: a change landing between this stat and the module's
  // C_Initialize differs from `now` at the next scan and costs one more restart, never
  // a missed change.
  const Marker now = read_marker();
  if (now.valid && now == seen_ && !recently_written(now)) return false;
  // tpm2-pkcs11's C_Initialize fails (CKR_GENERAL_ERROR, "database is locked") while
  // another process holds its SQLite store busy: the rotator writing, or other servers
  // re-initialising after the same change (three servers and a rotator on a loaded
  // 2-core machine kept it busy for over 170 ms). A failed restart leaves the module
  // uninitialised, so try again, pausing longer each time, for up to `max_wait` in all,
  // rather than leave every call failing until the next scan.
  const auto give_up = std::chrono::steady_clock::now() + max_wait;
  for (std::chrono::milliseconds pause(20);; pause *= 2) {
    try {
      if (!module.restart(max_wait)) return false;
      seen_ = now;
      return true;
    } catch (const Pkcs11Error&) {
      if (std::chrono::steady_clock::now() + pause > give_up) throw;
      std::this_thread::sleep_for(pause);
    }
  }
}

}  // namespace keysvc::hsm
