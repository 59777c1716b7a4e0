#include "keysvc/key_deriver.h"

#include "keysvc/log.h"
#include "keysvc/ring_store.h"
#include "keysvc/ticket_rules.h"

namespace keysvc {

namespace {

bool handle_is_stale(CK_RV rv) { return rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID; }

// Gateway work owns its inputs and output: it may finish after its caller stopped
// waiting (token_gateway.h).
struct PerTicketWork {
  PerTicketWork(const Generation& g, const Iv& i) : generation(g), iv(i) {}
  Generation generation;
  Iv iv;
  TicketKeys keys;  // wiped when the work is dropped
};

struct EpochWork {
  EpochWork(const Generation& g, std::int64_t e) : generation(g), epoch(e) {}
  Generation generation;
  std::int64_t epoch;
  std::shared_ptr<EpochKey> key = std::make_shared<EpochKey>();
};

}  // namespace

KeyDeriver::KeyDeriver(const Config& config, UnixClock now, TokenGateway& gateway, RingStore& rings,
                       TicketCounters& counters, ScanRequest request_scan)
    : config_(config),
      now_(std::move(now)),
      gateway_(gateway),
      rings_(rings),
      counters_(counters),
      request_scan_(std::move(request_scan)) {}

std::chrono::milliseconds KeyDeriver::ticket_wait() const noexcept {
  // call_timeout = 0 runs calls inline without a deadline; a wait still needs a bound.
  return config_.hsm.call_timeout.count() > 0 ? config_.hsm.call_timeout : config_.hsm.maintenance_timeout;
}

bool KeyDeriver::rescan(Throttle& throttle, std::chrono::milliseconds interval, bool* asked) noexcept {
  using std::chrono::steady_clock;
  const std::uint64_t seen = rings_.scans_finished();
  const auto wait = ticket_wait();
  const auto span = std::chrono::duration_cast<steady_clock::duration>(interval).count();
  const auto now = steady_clock::now().time_since_epoch().count();
  auto last = throttle.last.load(std::memory_order_relaxed);
  if ((last != 0 && now - last < span) || !throttle.last.compare_exchange_strong(last, now)) {
    // Throttled: no new scan, but one under way (another handshake's, or the one that
    // restarted the module and is reading the new handles) is still worth its wait.
    return rings_.scanning() && rings_.wait_for_scan(seen, steady_clock::now() + wait);
  }
  if (asked != nullptr) *asked = true;
  request_scan_();
  return rings_.wait_for_scan(seen, steady_clock::now() + wait);
}

bool KeyDeriver::with_current_handles(std::shared_ptr<const KeyRing>& ring, const Generation*& g, const char* what,
                                      const Attempt& attempt) noexcept {
  const KeyName name = g->name;
  // Handles become void with a module restart or a token reset: a rescan reads them
  // again (at most once a second, or once per breaker backoff if shorter).
  const auto interval = std::min<std::chrono::milliseconds>(std::chrono::seconds(1), config_.hsm.breaker_backoff);
  // Moves `ring` and `g` to a newer ring whose handles are current: the installed one if
  // it is newer already (the scan that restarted the module may have read the new
  // handles meanwhile), else after a rescan. False if there is none.
  auto reread = [&] {
    auto current_handles = [&](const KeyRing& r) {
      const Generation* x = r.find(name);
      return x != nullptr && !x->handles_predate(gateway_.module_generation());
    };
    auto current = rings_.current();
    if (current == ring || !current_handles(*current)) {
      rescan(stale_handle_rescans_, interval);
      current = rings_.current();
    }
    if (current == ring) return false;
    ring = std::move(current);
    g = ring->find(name);
    return g != nullptr && current_handles(*ring);
  };
  // The ring was read before a module restart: read it again first rather than fail this
  // call, which may be the breaker's probe (a failed probe keeps it open).
  if (g->handles_predate(gateway_.module_generation()) && !reread() && g == nullptr) {
    counters_.count(TicketEvent::kHsmErrors);
    return false;
  }
  for (int round = 0;; ++round) {
    if (!g->usable()) break;
    TokenGateway::Result r;
    try {
      r = attempt(*g);
      if (r.outcome != TokenGateway::Outcome::kRefused)
        counters_.count(TicketEvent::kHsmSignCalls, static_cast<std::uint64_t>(g->sign_calls()));
      if (r.ok()) return true;
    } catch (const std::exception& e) {  // allocation (secure memory, the work)
      r = {TokenGateway::Outcome::kFailed, CKR_OK, e.what(), {}};
    }
    if (round == 0 && r.outcome == TokenGateway::Outcome::kFailed && handle_is_stale(r.rv) && reread()) continue;
    if (g == nullptr) break;  // gone from the token meanwhile
    // Refusals (breaker open) are counted, not logged: the breaker logs when it opens.
    if (r.outcome != TokenGateway::Outcome::kRefused)
      logger()->warn("{} under {} failed: {}", what, to_hex(name), r.error);
    break;
  }
  counters_.count(TicketEvent::kHsmErrors);
  return false;
}

bool KeyDeriver::per_ticket(std::shared_ptr<const KeyRing>& ring, const Generation*& g, const Iv& iv,
                            TicketKeys& out) noexcept {
  const bool ok = with_current_handles(ring, g, "ticket key derivation", [&](const Generation& gen) {
    auto work = std::make_shared<PerTicketWork>(gen, iv);
    auto r = gateway_.run([work](hsm::Session& s) { derive_ticket_keys(s, work->generation, work->iv, work->keys); },
                          TokenGateway::Lane::kTicket);
    if (r.ok()) {
      out.aes_key = work->keys.aes_key;
      out.hmac_key = work->keys.hmac_key;
    }
    return r;
  });
  if (!ok) out.wipe();
  return ok;
}

EpochKeyCache::Key KeyDeriver::epoch_key(std::shared_ptr<const KeyRing>& ring, const Generation*& g,
                                         std::int64_t epoch, TokenGateway::Lane lane) noexcept {
  if (auto key = epoch_keys_.find(g->name, epoch)) return key;
  // One derivation per key: a lane waits for the other lane's derivation of the same key
  // and then finds it cached (at start-up the maintenance thread prepares the current
  // epoch's key while the first handshakes ask for it). And one derivation of a missing
  // key at a time on the ticket path: handshakes wait for it (at most the ticket
  // deadline), so tickets from many old epochs cost the HSM one call at a time.
  const bool ticket = lane == TokenGateway::Lane::kTicket;
  std::optional<EpochId>& mine = ticket ? ticket_deriving_ : maintenance_deriving_;
  const std::optional<EpochId>& other = ticket ? maintenance_deriving_ : ticket_deriving_;
  const EpochId id{g->name, epoch};
  struct Turn {  // this call's turn, given back on every return
    KeyDeriver* owner = nullptr;
    std::optional<EpochId>* slot = nullptr;
    ~Turn() {
      if (owner == nullptr) return;
      {
        std::lock_guard lock(owner->deriving_mutex_);
        slot->reset();
      }
      owner->derived_.notify_all();
    }
  } turn;
  {
    std::unique_lock lock(deriving_mutex_);
    const auto wait = ticket ? ticket_wait() : config_.hsm.maintenance_timeout;
    if (!derived_.wait_for(lock, wait, [&] { return !mine && other != id; })) {
      if (ticket) counters_.count(TicketEvent::kHsmErrors);
      return nullptr;
    }
    if (auto key = epoch_keys_.find(g->name, epoch)) return key;  // derived meanwhile
    mine = id;
    turn.owner = this;
    turn.slot = &mine;
  }
  EpochKeyCache::Key derived;
  const bool ok = with_current_handles(ring, g, "epoch key derivation", [&](const Generation& gen) {
    auto work = std::make_shared<EpochWork>(gen, epoch);
    auto r = gateway_.run([work](hsm::Session& s) { derive_epoch_key(s, work->generation, work->epoch, *work->key); },
                          lane);
    if (r.ok()) derived = work->key;
    return r;
  });
  if (!ok || !derived) return nullptr;
  epoch_keys_.put(g->name, epoch, derived);
  counters_.count(TicketEvent::kEpochKeysDerived);
  if (epoch_listener_) epoch_listener_(g->name, epoch);
  return derived;
}

void KeyDeriver::prepare_epochs() noexcept {
  auto ring = rings_.current();
  const std::int64_t now = now_();
  try {
    for (const EpochToPrepare& p : epochs_to_prepare(*ring, now, config_.rotation.clock_skew.count())) {
      auto r = ring;
      const Generation* g = p.generation;
      epoch_key(r, g, p.epoch, TokenGateway::Lane::kMaintenance);  // counted and logged if it fails
    }
  } catch (const std::exception& e) {
    logger()->warn("preparing epoch keys: {}", e.what());
  }
  retain_epochs(*rings_.current(), now);
}

void KeyDeriver::retain_epochs(const KeyRing& ring, std::int64_t now) noexcept {
  const std::int64_t lifetime = config_.tickets.lifetime.count(), skew = config_.rotation.clock_skew.count();
  try {
    epoch_keys_.retain([&](const KeyName& name, std::int64_t epoch) {
      const Generation* g = ring.find(name);
      return g != nullptr && epochs_to_keep(*g, now, lifetime, skew).contains(epoch);
    });
  } catch (const std::exception& e) {
    logger()->warn("dropping old epoch keys: {}", e.what());
  }
}

}  // namespace keysvc
