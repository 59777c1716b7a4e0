#include "keysvc/ticket_key_service.h"

#include <openssl/rand.h>

#include <utility>

#include "fork_hooks.h"
#include "keysvc/audit_trail.h"
#include "keysvc/issue_pool.h"
#include "keysvc/key_custody.h"
#include "keysvc/key_deriver.h"
#include "keysvc/log.h"
#include "keysvc/maintenance.h"
#include "keysvc/ring_store.h"
#include "keysvc/rotation.h"
#include "keysvc/session_key_cache.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_gateway.h"
#include "keysvc/token_store.h"

namespace keysvc {

namespace {

// A ticket's keys from an epoch key (derivation.h); false (logged) if OpenSSL failed.
bool keys_from_epoch(const EpochKey& key, const KeyName& name, const Iv& iv, TicketKeys& out) noexcept {
  try {
    derive_ticket_keys_from_epoch(key, name, iv, out);
    return true;
  } catch (const std::exception& e) {
    out.wipe();
    logger()->warn("per-ticket keys from the epoch key: {}", e.what());
    return false;
  }
}

}  // namespace

TicketKeyService::TicketKeyService(Config config, Clock clock, std::unique_ptr<TokenGateway> gateway)
    : config_(std::move(config)),
      clock_(std::move(clock)),
      gateway_(std::move(gateway)),
      unknown_name_rescans_(std::make_unique<RescanThrottle>()) {
  if (config_.hsm.session_copies) session_copies_ = std::make_unique<SessionKeyCache>(gateway_->token());
  rings_ = std::make_unique<RingStore>(*gateway_, [this] { return unix_now(); }, config_.rotation.clock_skew.count(),
                                       session_copies_.get(), custody_rule_of(config_));
  if (config_.tickets.issue_pool > 0) issue_pool_ = std::make_unique<IssueKeyPool>(config_.tickets.issue_pool);
  maintenance_ = std::make_unique<Maintenance>();
  // A scan the maintenance thread itself needs (an epoch key derivation that found its
  // handles stale after a module restart) runs there at once: requested, it would wait
  // behind the very task that waits for it, until the call deadline.
  deriver_ = std::make_unique<KeyDeriver>(config_, [this] { return unix_now(); }, *gateway_, *rings_, counters_, [this] {
    if (maintenance_->on_thread()) rings_->scan();
    else maintenance_->request(scan_task_);
  });
}

TicketKeyService::~TicketKeyService() { stop_background(); }

void TicketKeyService::stop_background() noexcept {
  ForkHooks::remove(this);  // a fork must not start the thread again
  maintenance_->stop();
  if (audit_) audit_->close();  // the final usage record and seal, while the token is there
}

std::shared_ptr<TicketKeyService> TicketKeyService::open(const Config& config, OpenOptions options) {
  set_log_level(config.log_level);
  Clock clock = options.clock ? std::move(options.clock) : [] { return std::chrono::system_clock::now(); };
  std::unique_ptr<TokenGateway> gateway;
  try {
    gateway = TokenGateway::open(config, std::move(options.pin));
  } catch (const hsm::Pkcs11Error& e) {
    if (audit::is_login_failure(e.rv())) audit::record_login_failure(config, audit::Writer::kServer, hsm::rv_name(e.rv()));
    throw;
  }
  std::shared_ptr<TicketKeyService> service(new TicketKeyService(config, std::move(clock), std::move(gateway)));
  service->audit_ = audit::AuditTrail::open(config, audit::Writer::kServer, service->gateway_.get(),
                                            [raw = service.get()] { return raw->usage(); });
  service->wire();
  service->reload();
  const std::int64_t now = service->unix_now();
  if (service->ring()->encrypt_generation(now) == nullptr &&
      (config.rotation.self_rotate || config.tickets.create_if_empty)) {
    RotationResult r = rotate(*service->gateway_, now, config.rotation, service->ring());
    for (const auto& g : r.created) logger()->info("created generation {}", to_hex(g.name));
    service->reload();
  }
  auto ring = service->ring();
  const Generation* current = ring->encrypt_generation(now);
  logger()->info("ticket key ring loaded: {} generation(s), encrypting under {}", ring->generations().size(),
                 current ? to_hex(current->name) : "(none)");
  service->maintenance_->start();
  service->maintenance_->request(service->refill_task_);
  ForkHooks::add(service.get());
  return service;
}

void TicketKeyService::wire() {
  rings_->listen([this](const KeyRing& before, const KeyRing& after, std::int64_t now) {
    ring_installed(before, after, now);
  });
  Maintenance& m = *maintenance_;
  m.add("ticket key refresh", config_.rotation.refresh_interval, [this] { refresh_task(); });
  scan_task_ = m.add("token rescan", std::chrono::milliseconds(0), [this] { rings_->scan(); });
  restart_task_ = m.add("PKCS#11 module restart", std::chrono::milliseconds(0), [this] { restart_task(); });
  // Also every second: a generation's window can begin without a ring change.
  refill_task_ = m.add("issue pool refill", issue_pool_ ? std::chrono::milliseconds(1000) : std::chrono::milliseconds(0),
                       [this] { fill_issue_pool(); });
  // Often enough that the next epoch's key is ready well before it starts, however short
  // the epochs (tests use seconds): a quarter epoch, at most a refresh interval.
  const auto epoch_period = std::clamp<std::chrono::milliseconds>(
      std::min<std::chrono::milliseconds>(config_.rotation.epoch / 4, config_.rotation.refresh_interval),
      std::chrono::milliseconds(250), std::chrono::seconds(60));
  epoch_task_ = m.add("epoch key preparation", epoch_period, [this] { deriver_->prepare_epochs(); });
  gateway_->on_restart_requested([this] { maintenance_->request(restart_task_); });
  deriver_->on_epoch_key([this](const KeyName& name, std::int64_t epoch) {
    if (audit_) audit_->epoch_key_derived(name, epoch);
  });
  if (audit_) audit::schedule(m, config_.audit, [this] { return audit_.get(); });
}

void TicketKeyService::ring_installed(const KeyRing& before, const KeyRing& after, std::int64_t now) noexcept {
  try {
    std::vector<KeyName> names;
    for (const auto& g : after.generations()) names.push_back(g.name);
    counters_.track(names);
  } catch (const std::exception& e) {
    logger()->warn("usage tracking: {}", e.what());
  }
  if (audit_) audit_->ring_changed(before, after, now);
  for (const auto& g : after.generations()) {
    const Generation* known = before.find(g.name);
    if (g.refused.empty() || (known != nullptr && !known->refused.empty())) continue;
    try {
      logger()->error("generation {} in the token refused, never used for tickets: {}", to_hex(g.name), g.refused);
    } catch (...) {
    }
  }
  const Generation* was = before.encrypt_generation(now);
  const Generation* is = after.encrypt_generation(now);
  if (is != nullptr && (was == nullptr || was->name != is->name)) {
    try {
      logger()->info("encrypting new tickets under generation {}", to_hex(is->name));
    } catch (...) {
    }
  }
  // Epoch keys of revoked, expired or vanished generations go at once; the new ring's
  // next ones are prepared.
  deriver_->retain_epochs(after, now);
  maintenance_->request(epoch_task_);
  // The pool follows the encrypt generation (so it never holds a revoked one's keys).
  if (issue_pool_ && (is == nullptr || (was != nullptr && was->name != is->name))) {
    issue_pool_->clear();
    maintenance_->request(refill_task_);
  }
}

std::int64_t TicketKeyService::unix_now() const {
  return std::chrono::duration_cast<std::chrono::seconds>(clock_().time_since_epoch()).count();
}

std::shared_ptr<const KeyRing> TicketKeyService::ring() const noexcept { return rings_->current(); }

void TicketKeyService::refresh_task() {
  if (config_.rotation.self_rotate) {
    RotationResult r = rotate(*gateway_, unix_now(), config_.rotation, rings_->current());
    for (const auto& g : r.created) logger()->info("rotation created generation {}", to_hex(g.name));
    for (const auto& name : r.destroyed) logger()->info("rotation destroyed generation {}", to_hex(name));
  }
  rings_->scan();
}

void TicketKeyService::restart_task() {
  if (!gateway_->restart_module_if_requested()) return;
  // While the HSM stays away this repeats once per backoff: said once.
  if (restarts_without_scan_++ == 0)
    logger()->warn("HSM gone: restarted the PKCS#11 module; retrying once per {} ms until the token is back",
                   config_.hsm.breaker_backoff.count());
  // A fresh scan after a restart: the token found again, a login, the new handles.
  if (rings_->scan() == RingStore::ScanResult::kInstalled) {
    logger()->info("HSM back after {} module restart(s): token found, ring reloaded", restarts_without_scan_);
    restarts_without_scan_ = 0;
  }
}

void TicketKeyService::refresh() {
  refresh_task();
  if (rings_->stale()) throw hsm::Error("token scan not used (see the log): keeping the last good ring");
}

void TicketKeyService::reload() {
  if (rings_->scan() != RingStore::ScanResult::kInstalled)
    throw hsm::Error("token scan not used (see the log): keeping the last good ring");
}

Generation TicketKeyService::create_generation() {
  Schedule s = schedule_encrypting_now(*ring(), unix_now(), config_.rotation);
  Generation g = gateway_->call([s, options = key_options(config_.rotation)](hsm::Session& session) {
    return token_store::create_generation(session, s, options);
  });
  reload();
  return g;
}

void TicketKeyService::fill_issue_pool() noexcept {
  if (!issue_pool_) return;
  for (;;) {
    auto ring = rings_->current();
    const Generation* g = ring->encrypt_generation(unix_now());
    if (g == nullptr || g->epoch_tier() || issue_pool_->missing(g->name) == 0) return;
    std::unique_ptr<IssueKeys> entry;
    try {
      entry = std::make_unique<IssueKeys>();
    } catch (const std::bad_alloc&) {
      return;  // no secure memory left: the next run tries again
    }
    entry->name = g->name;
    if (RAND_bytes(entry->iv.data(), static_cast<int>(entry->iv.size())) != 1) return;
    if (!deriver_->per_ticket(ring, g, entry->iv, entry->keys)) return;  // counted; the next run retries
    if (!issue_pool_->put(std::move(entry))) return;
  }
}

bool TicketKeyService::derive_for_issue(IssueKeys& out) noexcept {
  auto ring = rings_->current();
  const std::int64_t now = unix_now();
  const Generation* g = ring->encrypt_generation(now);
  if (g == nullptr) {
    counters_.count(TicketEvent::kIssueFailed);
    return false;
  }
  out.name = g->name;
  bool ok = false;
  if (g->epoch_tier()) {
    // The epoch's key is normally ready (prepare_epochs); if not, one HSM call now.
    const std::int64_t epoch = epoch_of(now, g->epoch_seconds);
    auto key = deriver_->epoch_key(ring, g, epoch, TokenGateway::Lane::kTicket);
    ok = key && make_epoch_iv(epoch, out.iv) && keys_from_epoch(*key, out.name, out.iv, out.keys);
  } else {
    if (issue_pool_) {
      bool taken = issue_pool_->take(g->name, out);
      maintenance_->request(refill_task_);
      if (taken) {
        counters_.count(TicketEvent::kIssuedFromPool);
        record(out.name, TicketOutcome::kIssued);
        return true;
      }
    }
    ok = RAND_bytes(out.iv.data(), static_cast<int>(out.iv.size())) == 1 && deriver_->per_ticket(ring, g, out.iv, out.keys);
  }
  if (!ok) {
    counters_.count(TicketEvent::kIssueFailed);
    return false;
  }
  record(out.name, TicketOutcome::kIssued);
  return true;
}

OpenStatus TicketKeyService::derive_for_open(const KeyName& name, const Iv& iv, TicketKeys& out) noexcept {
  auto ring = rings_->current();
  const Generation* g = ring->find(name);
  if (g == nullptr) {
    bool asked = false;
    const bool scanned = deriver_->rescan(*unknown_name_rescans_, config_.rotation.refresh_interval, &asked);
    if (asked) counters_.count(TicketEvent::kRescans);
    if (scanned) {
      ring = rings_->current();
      g = ring->find(name);
    }
  }
  // A refused generation (key_custody.h) is not keysvc's: its name is as unknown as any.
  if (g == nullptr || !g->refused.empty()) {
    record(name, TicketOutcome::kUnknownKey);
    return OpenStatus::kUnknownKey;
  }
  const std::int64_t now = unix_now(), skew = config_.rotation.clock_skew.count();
  if (!ticket_opens(*g, now, skew)) {
    record(name, g->revoked ? TicketOutcome::kRevoked : TicketOutcome::kExpired);
    return OpenStatus::kRetired;
  }
  bool ok = false;
  if (g->epoch_tier()) {
    // The epoch in the IV decides, before any HSM call (ticket_rules.h, "Epochs").
    const std::int64_t epoch = epoch_of_iv(iv, epoch_of(now, g->epoch_seconds));
    if (const TicketEpoch t = check_ticket_epoch(*g, epoch, now, config_.tickets.lifetime.count(), skew);
        t != TicketEpoch::kOpens) {
      record(name, t == TicketEpoch::kTooOld ? TicketOutcome::kExpired : TicketOutcome::kBadEpoch);
      return OpenStatus::kRetired;
    }
    auto key = deriver_->epoch_key(ring, g, epoch, TokenGateway::Lane::kTicket);
    ok = key && keys_from_epoch(*key, name, iv, out);
  } else {
    ok = deriver_->per_ticket(ring, g, iv, out);
  }
  if (!ok || g == nullptr) {
    record(name, TicketOutcome::kHsmError);
    return OpenStatus::kHsmError;
  }
  counters_.count(TicketEvent::kOpened);
  // The deriver may have moved `ring` (and `g`) to a newer ring.
  return ticket_renews(*ring, *g, now) ? OpenStatus::kOkRenew : OpenStatus::kOk;
}

std::optional<KeyName> TicketKeyService::encrypt_key_name() const noexcept {
  auto ring = rings_->current();
  if (const Generation* g = ring->encrypt_generation(unix_now())) return g->name;
  return std::nullopt;
}

void TicketKeyService::record(const KeyName& name, TicketOutcome outcome) noexcept {
  counters_.record(name, outcome);
  if (audit_) audit_->handshake(name, outcome);
}

ServiceCounters TicketKeyService::counters() const noexcept {
  ServiceCounters c;
  try {
    const TicketCounters::Snapshot s = counters_.snapshot();
    const RingStore::Counters scans = rings_->counters();
    c.issued = s.total(TicketOutcome::kIssued);
    c.opened = s[TicketEvent::kOpened];
    c.unknown_key = s.total(TicketOutcome::kUnknownKey);
    c.hsm_errors = s[TicketEvent::kHsmErrors] + scans.failed;
    c.hsm_calls = s[TicketEvent::kHsmSignCalls];
    c.retired_key = s.total(TicketOutcome::kExpired) + s.total(TicketOutcome::kRevoked);
    c.rescans = s[TicketEvent::kRescans];
    c.refreshes = scans.installed;
    c.issued_from_pool = s[TicketEvent::kIssuedFromPool];
    c.module_restarts = gateway_->counters().module_restarts;
    c.scans_not_used = scans.failed + scans.suspect;
    c.epoch_keys_derived = s[TicketEvent::kEpochKeysDerived];
    c.ring_stale = scans.stale;
  } catch (...) {
  }
  return c;
}

}  // namespace keysvc
