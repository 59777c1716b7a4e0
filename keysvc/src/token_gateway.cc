#include "keysvc/token_gateway.h"

#include <algorithm>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "keysvc/hsm/module.h"
#include "keysvc/hsm/process_hardening.h"
#include "keysvc/hsm/token.h"
#include "keysvc/hsm/token_uri.h"
#include "keysvc/log.h"

namespace keysvc {

namespace {


// Calls still in the module get this long to return before a restart gives up (a call
// hung longer keeps the module from being finalized under it: tried again later). A
// planned re-initialise before a scan waits longer: on a busy TPM one call can queue
// behind others' in the resource manager for a good part of a second.
constexpr std::chrono::milliseconds kRestartInFlightWait{100};
constexpr std::chrono::milliseconds kRescanInFlightWait{750};
// How long past the longer call deadline the gateway waits for its workers when it goes.
constexpr std::chrono::milliseconds kStopGrace{2000};

// Loads the config's module and finds its token.
hsm::Token find_token(const Config& config) {
  hsm::TokenUri uri = hsm::TokenUri::parse(config.hsm.token_uri);
  std::string module_path = config.hsm.module.empty() ? uri.module_path().value_or("") : config.hsm.module;
  if (module_path.empty()) throw ConfigError("no PKCS#11 module: set hsm.module");
  return hsm::Token::find(hsm::Module::load(module_path), uri);
}

}  // namespace

std::unique_ptr<hsm::SessionPool> TokenGateway::open_bare_pool(const Config& config,
                                                              std::optional<hsm::PinSource> pin) {
  hsm::PinSource source = pin ? std::move(*pin) : pin_source_of(config);
  hsm::Token token = find_token(config);
  auto pool = std::make_unique<hsm::SessionPool>(std::move(token), std::move(source), config.hsm.sessions);
  pool->warm_up();  // a wrong PIN or a locked token fails here, at start-up
  return pool;
}

void TokenGateway::with_public_session(const Config& config, const std::function<void(hsm::Session&)>& work) {
  hsm::Token token = find_token(config);
  hsm::Session session(token, /*read_write=*/true);
  work(session);
}

std::unique_ptr<TokenGateway> TokenGateway::open(const Config& config, std::optional<hsm::PinSource> pin) {
  // The process is about to hold the PIN and keys: no core dumps ([process] core_dumps).
  hsm::harden_process(config.process.core_dumps);
  auto pool = open_bare_pool(config, std::move(pin));
  HsmGuard::Options options{config.hsm.call_timeout,
                            {config.hsm.breaker_threshold, config.hsm.breaker_backoff},
                            config.hsm.sessions,
                            config.hsm.maintenance_timeout};
  return std::unique_ptr<TokenGateway>(new TokenGateway(std::move(pool), options));
}

TokenGateway::TokenGateway(std::unique_ptr<hsm::SessionPool> pool, HsmGuard::Options options)
    : pool_(std::move(pool)),
      options_(options),
      guard_(std::make_unique<HsmGuard>(*pool_, options_)),
      rescan_(pool_->token()) {}

TokenGateway::~TokenGateway() {
  // Every call has a deadline, so a worker still inside the module well after the longer
  // one is stuck there: measured with p11-kit's client, whose thread can wait for ever
  // for a reply after its server was killed (tests/reliability/network_hsm_test.cc).
  // Joining it would hang the process's exit or reload; the thread keeps using the
  // guard, the pool and the module, so they are left allocated and the module is not
  // finalized under it.
  const auto bound = std::max(options_.call_timeout, options_.maintenance_timeout) + kStopGrace;
  if (guard_->stop(std::chrono::steady_clock::now() + bound)) return;
  try {
    logger()->warn("an HSM call has not returned {} ms after its deadline; its thread is left behind and the "
                   "PKCS#11 module is not finalized",
                   kStopGrace.count());
  } catch (...) {
  }
  HsmGuard* guard = guard_.release();
  hsm::SessionPool* pool = pool_.release();
#if defined(__SANITIZE_ADDRESS__)
  __lsan_ignore_object(guard);  // left on purpose, not a leak
  __lsan_ignore_object(pool);
#endif
  (void)guard;
  (void)pool;
}

TokenGateway::Result TokenGateway::run(Work work, Lane lane) noexcept {
  Result r = lane == Lane::kTicket
                 ? guard_->run(std::move(work), HsmGuard::Admission::kBreaker, options_.call_timeout)
                 : guard_->run(std::move(work), HsmGuard::Admission::kBypassBreaker, options_.maintenance_timeout);
  if (r.outcome == Outcome::kFailed && (lane == Lane::kMaintenance || r.probe)) note(r);
  return r;
}

bool TokenGateway::device_gone(CK_RV rv) noexcept {
  // The session codes count because the call was already retried on a fresh session.
  return rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR || rv == CKR_TOKEN_NOT_PRESENT ||
         rv == CKR_CRYPTOKI_NOT_INITIALIZED || rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

void TokenGateway::note(const Result& r) noexcept {
  // A login or session open that keeps failing with CKR_GENERAL_ERROR (after the login's
  // own retries), or a login told that the token has no user PIN (it had one when this
  // process opened it), is a module whose view of the token broke: SoftHSM answers so
  // until it is initialised again after its token folder was unreachable, or in a forked
  // child whose C_Initialize read the token's files while another process was updating
  // them (ForkHooksTest, three children at once).
  bool broken_login = false;
  if ((r.rv == CKR_GENERAL_ERROR || r.rv == CKR_USER_PIN_NOT_INITIALIZED) && r.exception) {
    try {
      std::rethrow_exception(r.exception);
    } catch (const hsm::Pkcs11Error& e) {
      broken_login = e.operation() == "C_Login" || e.operation() == "C_OpenSession";
    } catch (...) {
    }
  }
  if (device_gone(r.rv) || broken_login) request_module_restart();
}

void TokenGateway::request_module_restart() noexcept {
  // Woken every time (a request the backoff held back is retried at the next one; the
  // breaker lets at most one probe fail per backoff, so this stays rare).
  restart_requested_.store(true, std::memory_order_relaxed);
  if (wake_) wake_();
}

bool TokenGateway::restart_module_if_requested() noexcept {
  if (!restart_requested_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lock(restart_mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (last_restart_ != std::chrono::steady_clock::time_point{} && now - last_restart_ < options_.breaker.backoff)
    return false;  // asked again soon: the request stays for the next turn
  restart_requested_.store(false, std::memory_order_relaxed);
  last_restart_ = now;
  hsm::Module& module = *pool_->token().module();
  try {
    if (!module.restart(kRestartInFlightWait)) {
      if (!module.only_user()) {
        static std::once_flag said;
        std::call_once(said, [&] {
          logger()->info("HSM module {} is shared with another user in this process: not restarting it",
                         module.path());
        });
      }
      return false;
    }
    module_restarts_.fetch_add(1, std::memory_order_relaxed);
    return true;
  } catch (const std::exception& e) {
    logger()->debug("PKCS#11 module restart: {} (the next failed call asks again)", e.what());
    return false;
  }
}

bool TokenGateway::prepare_for_scan() noexcept {
  if (rescan_.sees_changes_without_restart()) return false;
  try {
    if (!rescan_.before_scan(kRescanInFlightWait)) return false;
    module_restarts_.fetch_add(1, std::memory_order_relaxed);
    return true;
  } catch (const std::exception& e) {
    logger()->warn("re-initialising the PKCS#11 module before a token scan failed: {}", e.what());
    request_module_restart();
    return false;
  }
}

void TokenGateway::reset_after_fork() noexcept {
  try {
    pool_->token().module()->reinitialize_after_fork();
  } catch (const std::exception& e) {
    logger()->warn("C_Initialize after fork failed: {} (the next HSM call will tell)", e.what());
  }
  pool_->forget_after_fork();
  // The parent's workers are not in this process: destroying their guard would join
  // threads that do not exist. Leaked on purpose.
  (void)guard_.release();
  guard_ = std::make_unique<HsmGuard>(*pool_, options_);
}

std::uint64_t TokenGateway::module_generation() const noexcept { return pool_->token().module()->generation(); }

hsm::CallStats& TokenGateway::call_stats() const noexcept { return pool_->token().module()->stats(); }

TokenGateway::Counters TokenGateway::counters() const noexcept {
  return {guard_->counters(), module_restarts_.load(std::memory_order_relaxed)};
}

void TokenGateway::rethrow_unless_ok(const Result& r) {
  if (r.ok()) return;
  if (r.exception) std::rethrow_exception(r.exception);
  throw hsm::Error(r.error);
}

}  // namespace keysvc
