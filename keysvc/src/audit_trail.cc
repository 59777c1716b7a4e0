#include "keysvc/audit_trail.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>
#include <utility>

#include "keysvc/audit_anchor.h"
#include "keysvc/audit_key.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/login_policy.h"
#include "keysvc/hsm/token_uri.h"
#include "keysvc/log.h"
#include "keysvc/safe_file.h"
#include "keysvc/token_store.h"

namespace keysvc::audit {

namespace {

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// An exclusive flock on LOG.lock, held while the trail is open. The lock file is the
// writer's alone (0600): whoever may read the log (an auditor, a web application in the
// log's group) cannot open it, so cannot take the lock and keep the writer from starting,
// as a flock on the log itself would allow. kServer fails at once when another process
// holds it; kTool waits up to 10 s. Neither it nor the log is opened through a symlink
// (safe_file.h).
int lock_file(const std::string& log, Writer writer) {
  UniqueFd fd;
  try {
    fd = open_for_append(log + std::string(kLockSuffix), 0600);
  } catch (const FileError& e) {
    throw std::runtime_error("the audit log " + log + ": " + e.what());
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR)
      throw std::runtime_error("cannot lock the audit log " + log + ": " + std::strerror(errno));
    if (writer == Writer::kServer || std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("the audit log " + log + " is in use by another process" +
                               (writer == Writer::kServer
                                    ? " (processes sharing one config, such as nginx workers, need {pid} in audit.path)"
                                    : ""));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return fd.release();
}

// A writer without a token (failed login) does not seal; it names its records in the
// pending mark, on a public session of the token (audit_log.h).
Sealer no_token_sealer(const Config& config) { return Sealer{"", {}, {}, AnchorStore::public_only(config)}; }

const char* writer_name(Writer writer) { return writer == Writer::kServer ? "server" : "keysvcctl"; }

// Seals that failed are tried again this soon after the first failure, doubling up to
// the cap, so an outage's records are sealed soon after the HSM is back.
constexpr std::chrono::seconds kFirstSealRetry{1};
constexpr std::chrono::seconds kMaxSealRetry{30};

// The token URI for records: as given, minus any pin-value (describe() refuses to show
// one), or the bare label when it cannot be parsed.
std::string token_text(const Config& config) {
  try {
    return hsm::TokenUri::parse(config.hsm.token_uri).describe();
  } catch (const std::exception&) {
    return "(unparseable token URI)";
  }
}

}  // namespace

std::string log_path(const AuditConfig& config, Writer writer) {
  if (config.path.empty()) return config.path;
  std::string path = config.path;
  const bool per_process = path.find(kPidPlaceholder) != std::string::npos;
  // keysvcctl's runs are short and take turns on one file: "keysvcctl" stands for the ID.
  const std::string id = writer == Writer::kServer ? std::to_string(::getpid()) : "keysvcctl";
  for (std::size_t at = path.find(kPidPlaceholder); at != std::string::npos; at = path.find(kPidPlaceholder, at + id.size()))
    path.replace(at, kPidPlaceholder.size(), id);
  if (writer == Writer::kServer || per_process) return path;
  std::filesystem::path p(path);
  std::string stem = p.stem().string(), ext = p.extension().string();
  return (p.parent_path() / (stem + "-keysvcctl" + ext)).string();
}

bool is_login_failure(CK_RV rv) noexcept {
  // The PIN refusals the login policy knows, and a user that cannot log in at all.
  return hsm::LoginPolicy::is_pin_refusal(rv) || rv == CKR_USER_PIN_NOT_INITIALIZED || rv == CKR_USER_TYPE_INVALID;
}

std::unique_ptr<AuditTrail> AuditTrail::open(const Config& config, Writer writer, TokenGateway* gateway,
                                             std::function<UsageSnapshot()> usage) {
  if (!config.audit.enabled()) return nullptr;
  std::unique_ptr<AuditTrail> t(new AuditTrail());
  t->path_ = log_path(config.audit, writer);
  t->per_handshake_ = config.audit.per_handshake;
  t->gateway_ = gateway;
  t->usage_ = std::move(usage);
  t->last_usage_ms_ = unix_ms();
  Sealer sealer = gateway ? token_sealer(*gateway) : no_token_sealer(config);  // finds or creates the audit key
  t->lock_fd_ = lock_file(t->path_, writer);
  try {
    AuditLog::Options options;
    options.per_handshake = config.audit.per_handshake;
    options.fsync = config.audit.fsync;
    options.writer = writer_name(writer);
    options.anchor_retention = config.audit.anchor_retention;
    if (t->usage_) options.usage_source = [raw = t.get()] { return raw->take_usage(); };
    t->log_ = std::make_unique<AuditLog>(t->path_, std::move(sealer), std::move(options));
    t->log_->append_durable(ConfigLoaded{config.source});
    if (gateway) {
      t->stats_ = &gateway->call_stats();
      // Failures before this trail existed (a retried login, ...) are not this trail's.
      for (const auto& call : t->stats_->snapshot())
        for (const auto& [rv, n] : call.errors) t->stats_seen_[{static_cast<int>(call.call), rv}] = n;
    }
  } catch (...) {
    ::close(t->lock_fd_);
    t->lock_fd_ = -1;
    throw;
  }
  return t;
}

AuditTrail::~AuditTrail() { close(); }

void AuditTrail::close() noexcept {
  if (log_) {
    poll_hsm_errors();
    flush_hsm_errors(true);
    log_->close();
  }
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);  // releases the flock
    lock_fd_ = -1;
  }
}

void AuditTrail::seal() noexcept {
  try {
    log_->seal();
    std::lock_guard lock(retry_mutex_);
    if (retry_.failures > 0) logger()->info("audit: sealed again after {} failed attempt(s)", retry_.failures);
    retry_ = {};
  } catch (const std::exception& e) {
    std::lock_guard lock(retry_mutex_);
    // The first failure of a run is an error; the retries (every few seconds during an
    // outage) are not worth a line each.
    if (retry_.failures == 0)
      logger()->error("audit: seal failed (the tail stays unsealed until a seal succeeds; retrying): {}", e.what());
    else
      logger()->debug("audit: seal failed again: {}", e.what());
    const auto backoff = std::min<std::chrono::seconds>(kFirstSealRetry * (1 << std::min(retry_.failures, 5)),
                                                        kMaxSealRetry);
    ++retry_.failures;
    retry_.at = std::chrono::steady_clock::now() + backoff;
  }
}

void AuditTrail::retry_seal() noexcept {
  {
    std::lock_guard lock(retry_mutex_);
    if (retry_.failures == 0 || std::chrono::steady_clock::now() < retry_.at) return;
  }
  seal();
}

void AuditTrail::summarize() noexcept {
  try {
    log_->summarize();
  } catch (const std::exception& e) {
    logger()->error("audit: usage record failed: {}", e.what());
  }
}

void schedule(Maintenance& maintenance, const AuditConfig& config, std::function<AuditTrail*()> trail) {
  using std::chrono::milliseconds;
  auto every = [&](const char* name, std::chrono::seconds period, void (AuditTrail::*task)() noexcept) {
    if (period.count() == 0) return;
    maintenance.add(name, std::chrono::duration_cast<milliseconds>(period), [trail, task] {
      if (AuditTrail* t = trail()) (t->*task)();
    });
  };
  every("audit seal", config.seal_interval, &AuditTrail::seal);
  every("audit usage record", config.summary_interval, &AuditTrail::summarize);
  // Before the retry, so that the records of an outage's failures are in its first seal.
  every("audit HSM error records", std::chrono::seconds(1), &AuditTrail::poll_hsm_errors);
  every("audit seal retry", std::chrono::seconds(1), &AuditTrail::retry_seal);
}

UsageSummary AuditTrail::take_usage() {
  std::lock_guard lock(usage_mutex_);
  UsageSnapshot now = usage_();
  UsageSnapshot delta = usage_delta(now, last_usage_);
  UsageSummary s;
  s.period_start_ms = last_usage_ms_;
  s.period_end_ms = unix_ms();
  for (const auto& k : delta.keys) s.keys[k.name] = k.counters;
  last_usage_ = std::move(now);
  last_usage_ms_ = s.period_end_ms;
  return s;
}

void AuditTrail::lifecycle(const Event& event) { log_->append_durable(event); }

void AuditTrail::generation_created(const Generation& g) {
  if (gateway_ == nullptr) throw std::logic_error("audit: generation_created needs the token");
  auto custody = gateway_->call([g](hsm::Session& s) { return token_store::read_custody(s, g); });
  lifecycle(GenerationCreated{g.name, g.schedule, custody.enc, custody.mac});
}

RingState RingState::of(const KeyRing& ring, std::int64_t now) {
  RingState st;
  for (const auto& g : ring.generations()) {
    st.revoked[g.name] = g.revoked;
    if (!g.refused.empty()) st.refused.insert(g.name);
  }
  if (const Generation* g = ring.encrypt_generation(now)) st.encrypting = g->name;
  return st;
}

void AuditTrail::record_changes(const RingState& before, const KeyRing& after, std::int64_t now) {
  const RingState now_state = RingState::of(after, now);
  for (const auto& g : after.generations()) {
    auto it = before.revoked.find(g.name);
    if (it == before.revoked.end() && g.has_keys()) generation_created(g);
    if (g.revoked && (it == before.revoked.end() || !it->second)) lifecycle(Revoked{g.name});
    if (!g.refused.empty() && !before.refused.count(g.name)) lifecycle(GenerationRefused{g.name, g.refused});
  }
  if (now_state.encrypting != before.encrypting) {
    if (before.encrypting) {
      auto it = now_state.revoked.find(*before.encrypting);
      if (it != now_state.revoked.end() && !it->second) lifecycle(DecryptOnly{*before.encrypting});
    }
    if (now_state.encrypting) lifecycle(Activated{*now_state.encrypting});
  }
  for (const auto& [name, revoked] : before.revoked)
    if (!now_state.revoked.count(name)) lifecycle(Destroyed{name});
}

void AuditTrail::ring_changed(const KeyRing& before, const KeyRing& after, std::int64_t now) noexcept {
  try {
    std::lock_guard lock(ring_mutex_);
    // The first ring holds generations from before this process: only take note, except
    // of refused ones (a key planted before the server started is reported all the same).
    if (!std::exchange(ring_seen_, true)) {
      RingState first = RingState::of(after, now);
      first.refused.clear();
      record_changes(first, after, now);
      return;
    }
    record_changes(RingState::of(before, now), after, now);
  } catch (const std::exception& e) {
    logger()->error("audit: recording key ring changes failed: {}", e.what());
  }
}

namespace {
// Return values that answer a question rather than report a failure.
bool is_answer(CK_RV rv) {
  return rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_BUFFER_TOO_SMALL ||
         rv == CKR_USER_ALREADY_LOGGED_IN || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED;
}
}  // namespace

void AuditTrail::hsm_errors(std::string_view operation, std::string_view rv, std::uint64_t count) noexcept {
  try {
    std::lock_guard lock(errors_mutex_);
    auto key = std::make_pair(std::string(operation), std::string(rv));
    if (errors_.size() >= 256 && !errors_.count(key)) return;  // bounded whatever the token returns
    errors_[key].pending += count;
  } catch (...) {
    return;
  }
  flush_hsm_errors(false);
}

void AuditTrail::flush_hsm_errors(bool all) noexcept {
  try {
    std::vector<HsmError> records;
    {
      std::lock_guard lock(errors_mutex_);
      const auto now = std::chrono::steady_clock::now();
      for (auto& [key, w] : errors_) {
        if (w.pending == 0 || (!all && w.last && now - *w.last < kHsmErrorInterval)) continue;
        records.push_back(HsmError{key.first, key.second, w.pending});
        w.pending = 0;
        w.last = now;
      }
    }
    for (const auto& r : records) log_->append(r);
  } catch (const std::exception& e) {
    logger()->error("audit: recording HSM errors failed: {}", e.what());
  }
}

void AuditTrail::poll_hsm_errors() noexcept {
  if (stats_ == nullptr) return;
  try {
    std::lock_guard seen_lock(seen_mutex_);
    for (const auto& call : stats_->snapshot()) {
      for (const auto& [rv, n] : call.errors) {
        if (is_answer(rv)) continue;
        std::uint64_t& seen = stats_seen_[{static_cast<int>(call.call), rv}];
        if (n > seen) {
          const std::uint64_t delta = n - seen;
          seen = n;
          std::lock_guard lock(errors_mutex_);
          auto key = std::make_pair(std::string(hsm::call_name(call.call)), hsm::rv_name(rv));
          if (errors_.size() < 256 || errors_.count(key)) errors_[key].pending += delta;
        }
      }
    }
  } catch (const std::exception& e) {
    logger()->error("audit: reading HSM call statistics failed: {}", e.what());
  }
  flush_hsm_errors(false);
}

void AuditTrail::epoch_key_derived(const KeyName& name, std::int64_t epoch) noexcept {
  try {
    log_->append(EpochKeyDerived{name, epoch});
  } catch (const std::exception& e) {
    logger()->error("audit: recording an epoch key derivation failed: {}", e.what());
  }
}

void AuditTrail::append_handshake(const KeyName& name, TicketOutcome outcome) noexcept {
  try {
    log_->append(Handshake{name, outcome});
  } catch (...) {
    // Per-handshake records are best effort: the usage records carry the counts.
  }
}

void seal_pending_records(const Config& config, Writer writer, TokenGateway& gateway) noexcept {
  if (!config.audit.enabled()) return;
  try {
    const WriterSlot slot = WriterSlot::of(this_host(), log_path(config.audit, writer));
    if (!AnchorStore::on_gateway(gateway)->load(slot).pending) return;
    AuditTrail::open(config, writer, &gateway)->close();
  } catch (const std::exception& e) {
    logger()->error("audit: sealing the records the token's pending mark names failed: {}", e.what());
  }
}

void record_login_failure(const Config& config, Writer writer, std::string_view rv) noexcept {
  if (!config.audit.enabled()) return;
  try {
    auto trail = AuditTrail::open(config, writer, nullptr);
    trail->lifecycle(LoginFailed{token_text(config), std::string(rv)});
    trail->close();
  } catch (const std::exception& e) {
    logger()->error("audit: recording a failed login failed: {}", e.what());
  }
}

}  // namespace keysvc::audit
