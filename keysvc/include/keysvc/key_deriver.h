// The key deriver: from a generation to the keys a ticket needs, through the token
// gateway. It is where the two tiers (derivation.h) meet the HSM:
//   strict tier  per_ticket(): the ticket's keys computed in the token (one or two
//                HMACs), on the gateway's ticket lane;
//   epoch tier   epoch_key(): the generation's key for an epoch, from the epoch key cache
//                (epoch_keys.h) or computed in the token once (one HMAC) and cached;
//                prepare_epochs() derives the next ones ahead on the maintenance thread.
// Both survive object handles going void (a module restart, a token reset): the work
// asks the ring store for a rescan (throttled) and runs once more on the newer ring.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "keysvc/config.h"
#include "keysvc/derivation.h"
#include "keysvc/epoch_keys.h"
#include "keysvc/key_ring.h"
#include "keysvc/token_gateway.h"
#include "keysvc/usage.h"

namespace keysvc {

class RingStore;

// One caller's rescan throttle (KeyDeriver::rescan): when it last asked for a scan.
// Outside KeyDeriver so the service's header can declare it without this one.
struct RescanThrottle {
  std::atomic<std::chrono::steady_clock::rep> last{0};
};

class KeyDeriver {
 public:
  // Asks for a token scan: from a handshake thread it never blocks (the maintenance
  // thread scans); on the maintenance thread it scans at once.
  using ScanRequest = std::function<void()>;
  // Told of every epoch key the token derived (the audit trail records it).
  using EpochListener = std::function<void(const KeyName& name, std::int64_t epoch)>;

  using UnixClock = std::function<std::int64_t()>;
  KeyDeriver(const Config& config, UnixClock now, TokenGateway& gateway, RingStore& rings, TicketCounters& counters,
             ScanRequest request_scan);

  void on_epoch_key(EpochListener listener) { epoch_listener_ = std::move(listener); }

  // The strict tier: derives the keys of the ticket under `g` (of `ring`) with `iv` in
  // the token. If the token no longer knows the ring's handles, moves `ring` and `g` to a
  // newer ring (g becomes nullptr if the generation is gone) and tries once more. False,
  // counted and logged, if the token failed.
  bool per_ticket(std::shared_ptr<const KeyRing>& ring, const Generation*& g, const Iv& iv, TicketKeys& out) noexcept;

  // The epoch tier: the key of `g` for `epoch`, from the cache or derived in the token on
  // `lane` (the ticket lane from a handshake, which then waits at most hsm.call_timeout;
  // the maintenance lane from its one thread). A key is derived once however many ask:
  // concurrent handshakes, and a handshake and the maintenance thread, needing the same
  // key wait for one derivation. nullptr, counted, if the token failed.
  EpochKeyCache::Key epoch_key(std::shared_ptr<const KeyRing>& ring, const Generation*& g, std::int64_t epoch,
                               TokenGateway::Lane lane) noexcept;

  // On the maintenance thread: derives the epoch keys that should be ready now
  // (ticket_rules.h, epochs_to_prepare), then drops those tickets can no longer come
  // from (retain_epochs).
  void prepare_epochs() noexcept;
  // Keeps only the epoch keys of generations of `ring` that tickets may still come from at
  // `now`, and the next epoch's; every key of a revoked, expired or vanished generation
  // is wiped.
  void retain_epochs(const KeyRing& ring, std::int64_t now) noexcept;

  EpochKeyCache& epoch_keys() noexcept { return epoch_keys_; }

  // Asks for a rescan (throttled to one per `interval` per throttle) and waits for a scan
  // to finish, at most the ticket deadline. True when one finished meanwhile; `asked`
  // (optional) says whether this call asked for it. Also waits for a scan already under
  // way when throttled.
  using Throttle = RescanThrottle;
  bool rescan(Throttle& throttle, std::chrono::milliseconds interval, bool* asked = nullptr) noexcept;

 private:
  // Runs `attempt` for `g`; on stale handles moves to a newer ring and runs it once more.
  using Attempt = std::function<TokenGateway::Result(const Generation& g)>;
  bool with_current_handles(std::shared_ptr<const KeyRing>& ring, const Generation*& g, const char* what,
                            const Attempt& attempt) noexcept;
  // How long a handshake waits for a scan or another handshake's epoch key derivation.
  std::chrono::milliseconds ticket_wait() const noexcept;

  const Config& config_;
  UnixClock now_;
  TokenGateway& gateway_;
  RingStore& rings_;
  TicketCounters& counters_;
  ScanRequest request_scan_;
  EpochListener epoch_listener_;
  EpochKeyCache epoch_keys_;
  // The epoch key each lane is deriving (epoch_key): at most one on the ticket lane, and
  // the maintenance lane is one thread. Under a mutex with a condition variable rather
  // than std::timed_mutex: libstdc++ waits on that one with pthread_mutex_clocklock, which
  // GCC 12's ThreadSanitizer does not intercept.
  using EpochId = std::pair<KeyName, std::int64_t>;
  std::mutex deriving_mutex_;
  std::condition_variable derived_;
  std::optional<EpochId> ticket_deriving_, maintenance_deriving_;
  Throttle stale_handle_rescans_;
};

}  // namespace keysvc
