#include "keysvc/ticket_key_service.h"

#include <openssl/rand.h>

#include <utility>

#include "fork_hooks.h"
#include "keysvc/audit_trail.h"
#include "keysvc/issue_pool.h"
#include "keysvc/log.h"
#include "keysvc/maintenance.h"
#include "keysvc/ring_store.h"
#include "keysvc/rotation.h"
#include "keysvc/session_key_cache.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_gateway.h"
#include "keysvc/token_store.h"

namespace keysvc {

TicketKeyService::TicketKeyService(Config config, Clock clock, std::unique_ptr<TokenGateway> gateway)
    : config_(std::move(config)), clock_(std::move(clock)), gateway_(std::move(gateway)) {
  if (config_.hsm.session_copies) session_copies_ = std::make_unique<SessionKeyCache>(gateway_->token());
  rings_ = std::make_unique<RingStore>(*gateway_, [this] { return unix_now(); }, config_.rotation.clock_skew.count(),
                                       session_copies_.get());
  if (config_.tickets.issue_pool > 0) issue_pool_ = std::make_unique<IssueKeyPool>(config_.tickets.issue_pool);
  maintenance_ = std::make_unique<Maintenance>();
}

TicketKeyService::~TicketKeyService() {
  ForkHooks::remove(this);
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
  gateway_->on_restart_requested([this] { maintenance_->request(restart_task_); });
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
  const Generation* was = before.encrypt_generation(now);
  const Generation* is = after.encrypt_generation(now);
  if (is != nullptr && (was == nullptr || was->name != is->name)) {
    try {
      logger()->info("encrypting new tickets under generation {}", to_hex(is->name));
    } catch (...) {
    }
  }
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
    if (g == nullptr || issue_pool_->missing(g->name) == 0) return;
    std::unique_ptr<IssueKeys> entry;
    try {
      entry = std::make_unique<IssueKeys>();
    } catch (const std::bad_alloc&) {
      return;  // no secure memory left: the next run tries again
    }
    entry->name = g->name;
    if (RAND_bytes(entry->iv.data(), static_cast<int>(entry->iv.size())) != 1) return;
    if (!derive(ring, g, entry->iv, entry->keys)) return;  // counted; the next run retries
    if (!issue_pool_->put(std::move(entry))) return;
  }
}

bool TicketKeyService::rescan(Throttle& throttle, std::chrono::milliseconds interval, bool* asked) noexcept {
  using std::chrono::steady_clock;
  const std::uint64_t seen = rings_->scans_finished();
  const auto wait = config_.hsm.call_timeout.count() > 0 ? config_.hsm.call_timeout : config_.hsm.maintenance_timeout;
  const auto span = std::chrono::duration_cast<steady_clock::duration>(interval).count();
  const auto now = steady_clock::now().time_since_epoch().count();
  auto last = throttle.last.load(std::memory_order_relaxed);
  if ((last != 0 && now - last < span) || !throttle.last.compare_exchange_strong(last, now)) {
    // Throttled: no new scan, but one in progress (another handshake's, or the one that
    // restarted the module and is reading the new handles) is still worth its wait.
    return !maintenance_->on_thread() && rings_->scanning() &&
           rings_->wait_for_scan(seen, steady_clock::now() + wait);
  }
  if (asked != nullptr) *asked = true;
  maintenance_->request(scan_task_);
  if (maintenance_->on_thread()) return rings_->scan() == RingStore::ScanResult::kInstalled;
  return rings_->wait_for_scan(seen, steady_clock::now() + wait);
}

namespace {
bool handle_is_stale(CK_RV rv) { return rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID; }

// One derivation as gateway work: it owns its inputs and output, since it may finish
// after its caller stopped waiting (token_gateway.h).
struct DeriveWork {
  DeriveWork(const Generation& g, const Iv& i) : generation(g), iv(i) {}
  Generation generation;
  Iv iv;
  TicketKeys keys;  // wiped when the work is dropped
};
}  // namespace

bool TicketKeyService::derive(std::shared_ptr<const KeyRing>& ring, const Generation*& g, const Iv& iv,
                              TicketKeys& out) noexcept {
  const KeyName name = g->name;
  // Handles become void with a module restart or a token reset: a rescan reads them
  // again (at most once a second, or once per breaker backoff if shorter).
  const auto stale_interval = std::min<std::chrono::milliseconds>(std::chrono::seconds(1), config_.hsm.breaker_backoff);
  // Moves `ring` and `g` to a newer ring whose handles are current: the installed one if
  // it is newer already (the scan that restarted the module may have read the new
  // handles meanwhile), else after a rescan. False if there is none.
  auto reread = [&] {
    auto usable_now = [&](const KeyRing& r) {
      const Generation* x = r.find(name);
      return x != nullptr && !x->handles_predate(gateway_->module_generation());
    };
    auto current = rings_->current();
    if (current == ring || !usable_now(*current)) {
      rescan(stale_handle_rescans_, stale_interval);
      current = rings_->current();
    }
    if (current == ring) return false;
    ring = std::move(current);
    g = ring->find(name);
    return g != nullptr && usable_now(*ring);
  };

  // The ring was read before a module restart: read it again first rather than fail this
  // derivation, which may be the breaker's probe (a failed probe keeps it open).
  if (g->handles_predate(gateway_->module_generation()) && !reread() && g == nullptr) {
    counters_.count(TicketEvent::kHsmErrors);
    return false;
  }
  for (int attempt = 0;; ++attempt) {
    if (!g->usable()) break;
    TokenGateway::Result r;
    try {
      auto work = std::make_shared<DeriveWork>(*g, iv);
      r = gateway_->run([work](hsm::Session& s) { derive_ticket_keys(s, work->generation, work->iv, work->keys); },
                        TokenGateway::Lane::kTicket);
      if (r.outcome != TokenGateway::Outcome::kRefused)
        counters_.count(TicketEvent::kHsmSignCalls, static_cast<std::uint64_t>(g->sign_calls()));
      if (r.ok()) {
        out.aes_key = work->keys.aes_key;
        out.hmac_key = work->keys.hmac_key;
        return true;
      }
    } catch (const std::exception& e) {  // allocation
      r = {TokenGateway::Outcome::kFailed, CKR_OK, e.what(), {}};
    }
    out.wipe();
    if (attempt == 0 && r.outcome == TokenGateway::Outcome::kFailed && handle_is_stale(r.rv) && reread()) continue;
    if (g == nullptr) break;  // gone from the token meanwhile
    // Refusals (breaker open) are counted, not logged: the breaker logs when it opens.
    if (r.outcome != TokenGateway::Outcome::kRefused)
      logger()->warn("ticket key derivation under {} failed: {}", to_hex(name), r.error);
    break;
  }
  counters_.count(TicketEvent::kHsmErrors);
  return false;
}

bool TicketKeyService::derive_for_issue(IssueKeys& out) noexcept {
  auto ring = rings_->current();
  const Generation* g = ring->encrypt_generation(unix_now());
  if (g == nullptr) {
    counters_.count(TicketEvent::kIssueFailed);
    return false;
  }
  if (issue_pool_) {
    bool taken = issue_pool_->take(g->name, out);
    maintenance_->request(refill_task_);
    if (taken) {
      counters_.count(TicketEvent::kIssuedFromPool);
      record(out.name, TicketOutcome::kIssued);
      return true;
    }
  }
  out.name = g->name;
  if (RAND_bytes(out.iv.data(), static_cast<int>(out.iv.size())) != 1 || !derive(ring, g, out.iv, out.keys)) {
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
    const bool scanned = rescan(unknown_name_rescans_, config_.rotation.refresh_interval, &asked);
    if (asked) counters_.count(TicketEvent::kRescans);
    if (scanned) {
      ring = rings_->current();
      g = ring->find(name);
    }
  }
  if (g == nullptr) {
    record(name, TicketOutcome::kUnknownKey);
    return OpenStatus::kUnknownKey;
  }
  const std::int64_t now = unix_now();
  if (!ticket_opens(*g, now, config_.rotation.clock_skew.count())) {
    record(name, g->revoked ? TicketOutcome::kRevoked : TicketOutcome::kExpired);
    return OpenStatus::kRetired;
  }
  if (!derive(ring, g, iv, out)) {
    record(name, TicketOutcome::kHsmError);
    return OpenStatus::kHsmError;
  }
  counters_.count(TicketEvent::kOpened);
  // derive() may have moved `ring` (and `g`) to a newer ring.
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
    c.ring_stale = scans.stale;
  } catch (...) {
  }
  return c;
}

}  // namespace keysvc
