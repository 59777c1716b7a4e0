#include "keysvc/ticket_key_service.h"

#include <openssl/rand.h>

#include <mutex>
#include <utility>

#include "keysvc/audit_trail.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/token.h"
#include "keysvc/hsm/token_uri.h"
#include "keysvc/log.h"
#include "keysvc/rotation.h"
#include "keysvc/token_store.h"
#include "fork_hooks.h"

namespace keysvc {

std::unique_ptr<hsm::SessionPool> open_session_pool(const Config& config) {
  hsm::TokenUri uri = hsm::TokenUri::parse(config.hsm.token_uri);
  std::string module_path = config.hsm.module.empty() ? uri.module_path().value_or("") : config.hsm.module;
  if (module_path.empty()) throw ConfigError("no PKCS#11 module: set hsm.module");

  std::optional<hsm::PinSource> pin;
  if (!config.hsm.pin_source.empty()) {
    pin = hsm::PinSource::parse(config.hsm.pin_source);
  } else if (auto source = uri.pin_source()) {
    pin = hsm::PinSource::parse(*source);
  } else if (auto value = uri.pin_value()) {
    pin = hsm::PinSource::literal(std::move(*value));
  } else {
    throw ConfigError("no PIN source: set hsm.pin (file:PATH or env:NAME) or pin-source in the token URI");
  }

  auto module = hsm::Module::load(module_path);
  hsm::Token token = hsm::Token::find(module, uri);
  auto pool = std::make_unique<hsm::SessionPool>(std::move(token), std::move(*pin), config.hsm.sessions);
  pool->warm_up();  // a wrong PIN or a locked token fails here, at start-up
  return pool;
}

TicketKeyService::TicketKeyService(Config config, Clock clock, std::unique_ptr<hsm::SessionPool> pool)
    : config_(std::move(config)), clock_(std::move(clock)), pool_(std::move(pool)) {
  ring_.store(std::make_shared<const KeyRing>());
  make_hsm_helpers();
}

void TicketKeyService::make_hsm_helpers() {
  guard_ = std::make_unique<HsmGuard>(
      *pool_, HsmGuard::Options{config_.hsm.call_timeout,
                                {config_.hsm.breaker_threshold, config_.hsm.breaker_backoff},
                                config_.hsm.sessions});
  if (config_.hsm.session_copies) session_copies_ = std::make_unique<SessionKeyCache>(pool_->token());
}

TicketKeyService::~TicketKeyService() {
  ForkHooks::remove(this);
  stop_background();
  if (audit_) audit_->close();  // the final usage record and seal, while the token is there
}

void TicketKeyService::record(const KeyName& name, TicketOutcome outcome) noexcept {
  usage_.record(name, outcome);
  if (audit_) audit_->handshake(name, outcome);
}

std::shared_ptr<TicketKeyService> TicketKeyService::open(const Config& config, Clock clock) {
  set_log_level(config.log_level);
  if (!clock) clock = [] { return std::chrono::system_clock::now(); };
  std::unique_ptr<hsm::SessionPool> pool;
  try {
    pool = open_session_pool(config);
  } catch (const hsm::Pkcs11Error& e) {
    if (audit::is_login_failure(e.rv())) audit::record_login_failure(config, audit::Writer::kServer, hsm::rv_name(e.rv()));
    throw;
  }
  std::shared_ptr<TicketKeyService> service(new TicketKeyService(config, std::move(clock), std::move(pool)));
  service->audit_ = audit::AuditTrail::open(config, audit::Writer::kServer, service->pool_.get(),
                                            [raw = service.get()] { return raw->usage(); });
  service->reload();
  std::int64_t now = service->unix_now();
  if (service->ring()->encrypt_generation(now) == nullptr &&
      (config.rotation.self_rotate || config.tickets.create_if_empty)) {
    RotationResult r = rotate(*service->pool_, now, config.rotation);
    for (const auto& g : r.created) logger()->info("created generation {}", to_hex(g.name));
    service->reload();
  }
  auto ring = service->ring();
  const Generation* current = ring->encrypt_generation(now);
  logger()->info("ticket key ring loaded: {} generation(s), encrypting under {}", ring->generations().size(),
                 current ? to_hex(current->name) : "(none)");
  if (config.tickets.issue_pool > 0) service->issue_pool_ = std::make_unique<IssueKeyPool>(config.tickets.issue_pool);
  service->start_background();
  ForkHooks::add(service.get());
  return service;
}

void TicketKeyService::start_background() {
  stopping_ = false;
  refresher_ = std::thread([this] { refresher_loop(); });
  if (issue_pool_) {
    refiller_ = std::thread([this] { refiller_loop(); });
    request_refill();
  }
}

void TicketKeyService::stop_background() noexcept {
  {
    std::scoped_lock lock(refresher_mutex_, refill_mutex_);
    stopping_ = true;
  }
  refresher_wake_.notify_all();
  refill_wake_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  if (refiller_.joinable()) refiller_.join();
}

std::int64_t TicketKeyService::unix_now() const {
  return std::chrono::duration_cast<std::chrono::seconds>(clock_().time_since_epoch()).count();
}

void TicketKeyService::refresher_loop() {
  using std::chrono::steady_clock;
  std::unique_lock lock(refresher_mutex_);
  auto next_refresh = steady_clock::now() + config_.rotation.refresh_interval;
  for (;;) {
    refresher_wake_.wait_until(lock, next_refresh, [this] { return stopping_.load() || restart_requested_; });
    if (stopping_) return;
    const bool restart = std::exchange(restart_requested_, false);
    lock.unlock();
    if (restart) restart_module();
    if (steady_clock::now() >= next_refresh) {
      try {
        refresh();
      } catch (const std::exception& e) {
        counters_.hsm_errors.fetch_add(1, std::memory_order_relaxed);
        logger()->warn("ticket key refresh failed (keeping the previous ring): {}", e.what());
      }
      next_refresh = steady_clock::now() + config_.rotation.refresh_interval;
    }
    lock.lock();
  }
}

void TicketKeyService::request_module_restart() noexcept {
  {
    std::lock_guard lock(refresher_mutex_);
    restart_requested_ = true;
  }
  refresher_wake_.notify_one();
}

void TicketKeyService::restart_module() noexcept {
  // Probes fail at most once per backoff already; this also holds if several
  // handshakes report the same failed probe.
  const auto now = std::chrono::steady_clock::now();
  if (last_restart_ != std::chrono::steady_clock::time_point{} && now - last_restart_ < config_.hsm.breaker_backoff)
    return;
  last_restart_ = now;
  // Calls still in the module get this long to return; a call hung longer (a stalled
  // HSM) keeps the module from being finalized under it: try again at the next probe.
  static constexpr std::chrono::milliseconds kInFlightWait{100};
  hsm::Module& module = *pool_->token().module();
  try {
    if (!module.restart(kInFlightWait)) {
      if (!module.only_user()) {
        static std::once_flag said;
        std::call_once(said, [&] {
          logger()->info("HSM module {} is shared with another user in this process: not restarting it",
                         module.path());
        });
      }
      return;
    }
    module_restarts_.fetch_add(1, std::memory_order_relaxed);
    // While the HSM stays away this repeats once per backoff: say it once.
    if (restarts_without_reload_++ == 0)
      logger()->warn("HSM gone (the breaker's probe failed with a device error): restarted the PKCS#11 module; "
                     "retrying once per {} ms until the token is back",
                     config_.hsm.breaker_backoff.count());
    reload();  // a fresh session: finds the token again, logs in, reads the new handles
    logger()->info("HSM back after {} module restart(s): token found, ring reloaded", restarts_without_reload_);
    restarts_without_reload_ = 0;
  } catch (const std::exception& e) {
    logger()->debug("after the PKCS#11 module restart: {} (the next failed probe restarts again)", e.what());
  }
}

void TicketKeyService::refresh() {
  if (config_.rotation.self_rotate) {
    RotationResult r = rotate(*pool_, unix_now(), config_.rotation);
    for (const auto& g : r.created) logger()->info("rotation created generation {}", to_hex(g.name));
    for (const auto& name : r.destroyed) logger()->info("rotation destroyed generation {}", to_hex(name));
  }
  reload();
}

void TicketKeyService::reload() {
  auto box = std::make_shared<KeyRing>();  // owned by the work: it may outlive a timed-out wait
  HsmGuard::Result r = guard_->run([box](hsm::Session& s) { *box = token_store::load(s); },
                                    HsmGuard::Admission::kBypassBreaker);  // rescans have their own rate limits
  if (r.exception) std::rethrow_exception(r.exception);
  if (!r.ok()) throw hsm::Error("token scan: " + r.error);
  KeyRing loaded = std::move(*box);
  if (session_copies_) loaded = session_copies_->attach(loaded, unix_now(), config_.rotation.clock_skew.count());
  auto ring = std::make_shared<const KeyRing>(std::move(loaded));
  counters_.refreshes.fetch_add(1, std::memory_order_relaxed);
  {
    std::vector<KeyName> names;
    for (const auto& g : ring->generations()) names.push_back(g.name);
    usage_.track(names);
  }
  if (audit_) audit_->ring_loaded(*ring, unix_now(), *pool_);
  std::int64_t now = unix_now();
  auto previous = ring_.exchange(ring);
  const Generation* before = previous->encrypt_generation(now);
  const Generation* after = ring->encrypt_generation(now);
  if (after != nullptr && (before == nullptr || before->name != after->name)) {
    logger()->info("encrypting new tickets under generation {}", to_hex(after->name));
    if (issue_pool_) {
      issue_pool_->clear();  // entries of the old generation are never used
      request_refill();
    }
  }
}

void TicketKeyService::request_refill() noexcept {
  if (!issue_pool_) return;
  {
    std::lock_guard lock(refill_mutex_);
    refill_requested_ = true;
  }
  refill_wake_.notify_one();
}

void TicketKeyService::refiller_loop() {
  std::unique_lock lock(refill_mutex_);
  while (!stopping_) {
    // Also wakes every second: a generation's window can begin without a reload.
    refill_wake_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_.load() || refill_requested_; });
    if (stopping_) break;
    refill_requested_ = false;
    lock.unlock();
    fill_issue_pool();
    lock.lock();
  }
}

void TicketKeyService::fill_issue_pool() noexcept {
  while (!stopping_) {
    auto ring = ring_.load();
    const Generation* g = ring->encrypt_generation(unix_now());
    if (g == nullptr || issue_pool_->missing(g->name) == 0) return;
    auto entry = std::make_unique<IssueKeys>();
    entry->name = g->name;
    if (RAND_bytes(entry->iv.data(), static_cast<int>(entry->iv.size())) != 1) return;
    if (!derive(ring, g, entry->iv, entry->keys)) return;  // counted; next wake retries
    if (!issue_pool_->put(std::move(entry))) return;
  }
}

Generation TicketKeyService::create_generation() {
  Schedule s = schedule_encrypting_now(*ring(), unix_now(), config_.rotation);
  Generation g = pool_->run(
      [&](hsm::Session& session) {
        return token_store::create_generation(session, s, key_options(config_.rotation));
      });
  reload();
  return g;
}

namespace {
bool handle_is_stale(CK_RV rv) { return rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID; }

// What a failed probe returns when the device (or the module's connection to it) is
// gone, rather than a key or a session being wrong: a module restart may help. The
// session codes count because a probe already retried on a fresh session.
bool device_gone(CK_RV rv) {
  return rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR || rv == CKR_TOKEN_NOT_PRESENT ||
         rv == CKR_CRYPTOKI_NOT_INITIALIZED || rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

// One derivation as guarded work: it owns its inputs and output, since it may finish
// after its caller stopped waiting (hsm_guard.h).
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
  // Reads the ring again (throttled) and finds `name` in it; false if the reload was
  // throttled away or the generation is gone from the token meanwhile.
  auto reread = [&](const char* why) {
    if (!throttled_reload(stale_handle_reloads_, stale_handle_reload_interval(), why)) return false;
    ring = ring_.load();
    g = ring->find(name);
    return g != nullptr;
  };
  // The ring was read before a module restart: its handles are void. Read it again
  // first rather than fail this derivation, which may be the breaker's probe: a failed
  // probe would keep the breaker open for another backoff.
  if (g->handles_predate(pool_->token().module()->generation()) && !reread("module restarted") && g == nullptr) {
    counters_.hsm_errors.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  for (int attempt = 0;; ++attempt) {
    if (!g->usable()) break;
    HsmGuard::Result r;
    try {
      auto work = std::make_shared<DeriveWork>(*g, iv);
      r = guard_->run([work](hsm::Session& s) { derive_ticket_keys(s, work->generation, work->iv, work->keys); });
      if (r.outcome != HsmGuard::Outcome::kRefused)
        counters_.hsm_calls.fetch_add(g->sign_calls(), std::memory_order_relaxed);
      if (r.ok()) {
        out.aes_key = work->keys.aes_key;
        out.hmac_key = work->keys.hmac_key;
        return true;
      }
    } catch (const std::exception& e) {  // allocation
      r = {HsmGuard::Outcome::kFailed, CKR_OK, e.what(), {}};
    }
    out.wipe();
    if (attempt == 0 && r.outcome == HsmGuard::Outcome::kFailed && handle_is_stale(r.rv) &&
        reread("stale object handles"))
      continue;
    if (g == nullptr) break;  // gone from the token meanwhile
    if (r.probe && r.outcome == HsmGuard::Outcome::kFailed && device_gone(r.rv)) request_module_restart();
    // Refusals (breaker open) are counted, not logged: the breaker logs when it opens.
    if (r.outcome != HsmGuard::Outcome::kRefused)
      logger()->warn("ticket key derivation under {} failed: {}", to_hex(name), r.error);
    break;
  }
  counters_.hsm_errors.fetch_add(1, std::memory_order_relaxed);
  return false;
}

bool TicketKeyService::derive_for_issue(IssueKeys& out) noexcept {
  auto ring = ring_.load();
  const Generation* g = ring->encrypt_generation(unix_now());
  if (g == nullptr) {
    counters_.hsm_errors.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (issue_pool_) {
    bool taken = issue_pool_->take(g->name, out);
    request_refill();
    if (taken) {
      counters_.issued_from_pool.fetch_add(1, std::memory_order_relaxed);
      counters_.issued.fetch_add(1, std::memory_order_relaxed);
      record(out.name, TicketOutcome::kIssued);
      return true;
    }
  }
  if (RAND_bytes(out.iv.data(), static_cast<int>(out.iv.size())) != 1) return false;
  out.name = g->name;
  if (!derive(ring, g, out.iv, out.keys)) return false;
  counters_.issued.fetch_add(1, std::memory_order_relaxed);
  record(out.name, TicketOutcome::kIssued);
  return true;
}

std::chrono::milliseconds TicketKeyService::stale_handle_reload_interval() const noexcept {
  // At most once a second, or once per breaker backoff if that is shorter: the breaker
  // already keeps a failing HSM from being hammered, and handles lost in a token reset
  // (or a logout) should come back within a backoff of the HSM answering again.
  return std::min<std::chrono::milliseconds>(std::chrono::seconds(1), config_.hsm.breaker_backoff);
}

bool TicketKeyService::throttled_reload(Throttle& throttle, std::chrono::milliseconds interval,
                                        const char* why) noexcept {
  using std::chrono::steady_clock;
  const auto span = std::chrono::duration_cast<steady_clock::duration>(interval).count();
  const auto now = steady_clock::now().time_since_epoch().count();
  auto last = throttle.last.load(std::memory_order_relaxed);
  if (last != 0 && now - last < span) return false;  // reloaded lately
  std::lock_guard lock(throttle.mutex);               // waits out a reload in progress
  if (throttle.last.load() != last) return true;      // another thread just reloaded
  throttle.last.store(now);
  throttle.reloads.fetch_add(1, std::memory_order_relaxed);
  try {
    reload();
    return true;
  } catch (const std::exception& e) {
    counters_.hsm_errors.fetch_add(1, std::memory_order_relaxed);
    logger()->warn("token rescan ({}) failed: {}", why, e.what());
    return false;
  }
}

OpenStatus TicketKeyService::derive_for_open(const KeyName& name, const Iv& iv, TicketKeys& out) noexcept {
  auto ring = ring_.load();
  const Generation* g = ring->find(name);
  if (g == nullptr &&
      throttled_reload(unknown_name_rescans_, config_.rotation.refresh_interval, "unknown key name")) {
    ring = ring_.load();
    g = ring->find(name);
  }
  if (g == nullptr) {
    counters_.unknown_key.fetch_add(1, std::memory_order_relaxed);
    record(name, TicketOutcome::kUnknownKey);
    return OpenStatus::kUnknownKey;
  }
  std::int64_t now = unix_now();
  if (!KeyRing::decrypts(*g, now, config_.rotation.clock_skew.count())) {
    counters_.retired_key.fetch_add(1, std::memory_order_relaxed);
    record(name, g->revoked ? TicketOutcome::kRevoked : TicketOutcome::kExpired);
    return OpenStatus::kRetired;
  }
  if (!derive(ring, g, iv, out)) {
    record(name, TicketOutcome::kHsmError);
    return OpenStatus::kHsmError;
  }
  counters_.opened.fetch_add(1, std::memory_order_relaxed);
  // Renew tickets under an older generation; a newer one (a server whose clock runs
  // ahead already switched) is left alone. derive() may have reloaded `ring` (and `g`).
  const Generation* current = ring->encrypt_generation(now);
  bool older = current != nullptr && current != g && g->schedule.encrypt_from <= current->schedule.encrypt_from;
  return older ? OpenStatus::kOkRenew : OpenStatus::kOk;
}

std::optional<KeyName> TicketKeyService::encrypt_key_name() const noexcept {
  auto ring = ring_.load();
  if (const Generation* g = ring->encrypt_generation(unix_now())) return g->name;
  return std::nullopt;
}

ServiceCounters TicketKeyService::counters() const noexcept {
  auto r = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return {r(counters_.issued),    r(counters_.opened),      r(counters_.unknown_key), r(counters_.hsm_errors),
          r(counters_.hsm_calls), r(counters_.retired_key), r(unknown_name_rescans_.reloads),     r(counters_.refreshes),
          r(counters_.issued_from_pool), r(module_restarts_)};
}

}  // namespace keysvc
