// The ticket key service: the one object a TLS integration talks to.
//
// It owns the session pool on the token and a snapshot of the key ring, and answers
// the two questions of the ticket path with per-ticket keys derived in the HSM:
//   issue: "which generation encrypts now, with what IV, and what are this ticket's keys?"
//   open:  "for this key name and IV, what are the ticket's keys, and should it be renewed?"
// Both are safe to call from any number of handshake threads at once, never throw, and
// never hand out long-term keys or object handles.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "keysvc/config.h"
#include "keysvc/derivation.h"
#include "keysvc/hsm/session_pool.h"
#include "keysvc/key_name.h"
#include "keysvc/key_ring.h"

namespace keysvc {

// Wall-clock source; injectable so tests can move time.
using Clock = std::function<std::chrono::system_clock::time_point()>;

// The keys for one new ticket.
struct IssueKeys {
  KeyName name{};
  Iv iv{};
  TicketKeys keys;
};

enum class OpenStatus {
  kOk,          // keys derived; generation still encrypts
  kOkRenew,     // keys derived; the ticket is under an older generation: renew it
  kUnknownKey,  // no generation has this name
  kHsmError,    // the token failed; serve a full handshake
};

struct ServiceCounters {
  std::uint64_t issued = 0;       // per-ticket keys handed out for new tickets
  std::uint64_t opened = 0;       // per-ticket keys handed out for presented tickets
  std::uint64_t unknown_key = 0;  // presented tickets whose key name is not in the ring
  std::uint64_t hsm_errors = 0;   // issue/open calls that failed in the token
  std::uint64_t hsm_calls = 0;    // PKCS#11 sign operations made for tickets
};

class TicketKeyService {
 public:
  // Loads the module, finds the token, logs in (the PIN is read from its source and
  // wiped), loads the ring and, if it is empty and tickets.create_if_empty is set,
  // creates the first generation. Throws ConfigError / hsm::Pkcs11Error with one line.
  static std::shared_ptr<TicketKeyService> open(const Config& config, Clock clock = {});

  ~TicketKeyService();
  TicketKeyService(const TicketKeyService&) = delete;
  TicketKeyService& operator=(const TicketKeyService&) = delete;

  // Fills `out` for a new ticket: the encrypting generation's name, a fresh random IV
  // and the derived keys. Returns false (and counts an HSM error) if there is no
  // generation or the token fails.
  bool derive_for_issue(IssueKeys& out) noexcept;

  // Derives the keys of a presented ticket.
  OpenStatus derive_for_open(const KeyName& name, const Iv& iv, TicketKeys& out) noexcept;

  // The name new tickets are issued under, if any.
  std::optional<KeyName> encrypt_key_name() const noexcept;

  // The current ring snapshot.
  std::shared_ptr<const KeyRing> ring() const noexcept { return ring_.load(); }

  // Rescans the token and swaps in the new ring. Throws on token failure.
  void refresh();

  // Creates a new generation in the token and refreshes. Returns it.
  Generation create_generation();

  std::chrono::system_clock::time_point now() const { return clock_(); }
  const Config& config() const noexcept { return config_; }
  hsm::SessionPool& sessions() noexcept { return *pool_; }
  ServiceCounters counters() const noexcept;

 private:
  TicketKeyService(Config config, Clock clock, std::unique_ptr<hsm::SessionPool> pool);
  bool derive(const Generation& g, const Iv& iv, TicketKeys& out) noexcept;

  Config config_;
  Clock clock_;
  std::unique_ptr<hsm::SessionPool> pool_;
  std::atomic<std::shared_ptr<const KeyRing>> ring_;
  struct AtomicCounters {
    std::atomic<std::uint64_t> issued{0}, opened{0}, unknown_key{0}, hsm_errors{0}, hsm_calls{0};
  } counters_;
};

// Builds the session pool for `config` (module, token URI, PIN source) and logs in.
// Used by the service and by tools that manage the token. Throws ConfigError /
// hsm::Pkcs11Error.
std::unique_ptr<hsm::SessionPool> open_session_pool(const Config& config);

}  // namespace keysvc
