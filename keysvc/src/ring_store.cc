#include "keysvc/ring_store.h"

#include "keysvc/log.h"
#include "keysvc/session_key_cache.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_store.h"

namespace keysvc {

RingStore::RingStore(TokenGateway& gateway, UnixClock now, std::int64_t skew, SessionKeyCache* session_copies,
                     CustodyRule custody)
    : gateway_(gateway), now_(std::move(now)), skew_(skew), session_copies_(session_copies), custody_(custody) {
  ring_.store(std::make_shared<const KeyRing>());
}

void RingStore::listen(Listener listener) { listeners_.push_back(std::move(listener)); }

RingStore::ScanResult RingStore::scan() noexcept {
  std::lock_guard serial(scan_mutex_);
  scanning_.store(true, std::memory_order_relaxed);
  struct Done {
    std::atomic<bool>& flag;
    ~Done() { flag.store(false, std::memory_order_relaxed); }
  } done{scanning_};
  std::shared_ptr<const KeyRing> installed;
  const auto started = std::chrono::steady_clock::now();
  const bool restarted = gateway_.prepare_for_scan();  // a token that needs a re-initialise to show others' changes
  try {
    KeyRing loaded = gateway_.call([rule = custody_](hsm::Session& s) { return token_store::load(s, rule); });
    const std::int64_t now = now_();
    auto previous = ring_.load();
    if (scan_lost_every_generation(*previous, loaded, now)) {
      // A module whose view of the token broke (SoftHSM after its token folder was
      // unreachable lists nothing until initialised again): restart it, where allowed.
      gateway_.request_module_restart();
      finish(ScanResult::kSuspect, "the token shows none of the " + std::to_string(previous->generations().size()) +
                                       " generation(s) it held (an outage, or a token folder that cannot be read)");
      return ScanResult::kSuspect;
    }
    if (session_copies_) {
      // The copies live in the cache's own session; the call still takes the gateway's
      // deadline (work owns its inputs: it may outlive this wait).
      auto box = std::make_shared<KeyRing>(std::move(loaded));
      gateway_.call([cache = session_copies_, box, now, skew = skew_](hsm::Session&) {
        *box = cache->attach(*box, now, skew);
        return true;
      });
      loaded = std::move(*box);
    }
    installed = std::make_shared<const KeyRing>(std::move(loaded));
    ring_.store(installed);
    logger()->debug("token scan: {} generation(s){}, {} ms", installed->generations().size(),
                    restarted ? " (module re-initialised first)" : "",
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
    for (const auto& listener : listeners_) {
      try {
        listener(*previous, *installed, now);
      } catch (const std::exception& e) {
        logger()->error("ring listener failed: {}", e.what());
      }
    }
  } catch (const std::exception& e) {
    finish(ScanResult::kFailed, e.what());
    return ScanResult::kFailed;
  }
  finish(ScanResult::kInstalled, "");
  return ScanResult::kInstalled;
}

void RingStore::finish(ScanResult result, const std::string& why) noexcept {
  bool was_stale;
  std::size_t held = ring_.load()->generations().size();
  {
    std::lock_guard lock(state_mutex_);
    was_stale = counters_.stale;
    ++counters_.scans;
    if (result == ScanResult::kInstalled) ++counters_.installed;
    if (result == ScanResult::kFailed) ++counters_.failed;
    if (result == ScanResult::kSuspect) ++counters_.suspect;
    counters_.stale = result != ScanResult::kInstalled;
  }
  scanned_.notify_all();
  try {
    if (result != ScanResult::kInstalled && !was_stale)
      logger()->warn("token scan not used, keeping the last good ring of {} generation(s): {}", held, why);
    else if (result == ScanResult::kInstalled && was_stale)
      logger()->info("token scan good again: ring of {} generation(s) installed", held);
  } catch (...) {
  }
}

std::uint64_t RingStore::scans_finished() const {
  std::lock_guard lock(state_mutex_);
  return counters_.scans;
}

bool RingStore::wait_for_scan(std::uint64_t seen, std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(state_mutex_);
  return scanned_.wait_until(lock, deadline, [&] { return counters_.scans > seen; });
}

bool RingStore::stale() const {
  std::lock_guard lock(state_mutex_);
  return counters_.stale;
}

RingStore::Counters RingStore::counters() const {
  std::lock_guard lock(state_mutex_);
  return counters_;
}

}  // namespace keysvc
