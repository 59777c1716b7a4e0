#include "keysvc/ticket_key_service.h"

#include <openssl/rand.h>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/token.h"
#include "keysvc/hsm/token_uri.h"
#include "keysvc/log.h"
#include "keysvc/token_store.h"

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
    pin = hsm::PinSource::literal(hsm::SecretString(*value));
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
}

TicketKeyService::~TicketKeyService() = default;

std::shared_ptr<TicketKeyService> TicketKeyService::open(const Config& config, Clock clock) {
  set_log_level(config.log_level);
  if (!clock) clock = [] { return std::chrono::system_clock::now(); };
  std::shared_ptr<TicketKeyService> service(new TicketKeyService(config, std::move(clock), open_session_pool(config)));
  service->refresh();
  if (service->ring()->empty() && config.tickets.create_if_empty) {
    Generation g = service->create_generation();
    logger()->info("token had no ticket keys: created generation {}", to_hex(g.name));
  }
  auto ring = service->ring();
  logger()->info("ticket key ring loaded: {} generation(s), encrypting under {}", ring->generations().size(),
                 ring->encrypt_generation() ? to_hex(ring->encrypt_generation()->name) : "(none)");
  return service;
}

void TicketKeyService::refresh() {
  auto ring = pool_->run([](hsm::Session& s) { return token_store::load(s); });
  ring_.store(std::make_shared<const KeyRing>(std::move(ring)));
}

Generation TicketKeyService::create_generation() {
  auto created = std::chrono::duration_cast<std::chrono::seconds>(clock_().time_since_epoch()).count();
  Generation g = pool_->run([&](hsm::Session& s) { return token_store::create_generation(s, created); });
  refresh();
  return g;
}

bool TicketKeyService::derive(const Generation& g, const Iv& iv, TicketKeys& out) noexcept {
  try {
    counters_.hsm_calls.fetch_add(2, std::memory_order_relaxed);
    pool_->run([&](hsm::Session& s) { derive_ticket_keys(s, g, iv, out); });
    return true;
  } catch (const std::exception& e) {
    out.wipe();
    counters_.hsm_errors.fetch_add(1, std::memory_order_relaxed);
    logger()->warn("ticket key derivation under {} failed: {}", to_hex(g.name), e.what());
    return false;
  }
}

bool TicketKeyService::derive_for_issue(IssueKeys& out) noexcept {
  auto ring = ring_.load();
  const Generation* g = ring->encrypt_generation();
  if (g == nullptr) {
    counters_.hsm_errors.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (RAND_bytes(out.iv.data(), static_cast<int>(out.iv.size())) != 1) return false;
  out.name = g->name;
  if (!derive(*g, out.iv, out.keys)) return false;
  counters_.issued.fetch_add(1, std::memory_order_relaxed);
  return true;
}

OpenStatus TicketKeyService::derive_for_open(const KeyName& name, const Iv& iv, TicketKeys& out) noexcept {
  auto ring = ring_.load();
  const Generation* g = ring->find(name);
  if (g == nullptr) {
    counters_.unknown_key.fetch_add(1, std::memory_order_relaxed);
    return OpenStatus::kUnknownKey;
  }
  if (!derive(*g, iv, out)) return OpenStatus::kHsmError;
  counters_.opened.fetch_add(1, std::memory_order_relaxed);
  return g == ring->encrypt_generation() ? OpenStatus::kOk : OpenStatus::kOkRenew;
}

std::optional<KeyName> TicketKeyService::encrypt_key_name() const noexcept {
  auto ring = ring_.load();
  if (const Generation* g = ring->encrypt_generation()) return g->name;
  return std::nullopt;
}

ServiceCounters TicketKeyService::counters() const noexcept {
  auto r = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return {r(counters_.issued), r(counters_.opened), r(counters_.unknown_key), r(counters_.hsm_errors),
          r(counters_.hsm_calls)};
}

}  // namespace keysvc
