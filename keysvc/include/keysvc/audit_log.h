// keysvc's audit trail: a tamper-evident JSON Lines file, sealed in the HSM and anchored
// in the token.
//
// Every record is one line, built here byte for byte (spdlog only carries it: the sink's
// pattern is "%v"), so the hash chain is over exactly the bytes in the file:
//
//   {"seq":7,"ts":"2026-11-23T12:00:00.123Z","host":"h","pid":42,"event":"revoked",
//    "name":"<32 hex>","prev":"<64 hex>"}
//
//   seq   1, 2, 3, ... over the whole chain, across rotated files
//   ts    UTC, milliseconds; never earlier than the record before it (the writer holds it
//         back if the clock steps back)
//   prev  hex SHA-256 of the previous line's bytes (without its '\n'); for the very
//         first record of a chain, 64 zeros
//
// Chains and anchors (audit_anchor.h). Each writer's file holds one chain with a random
// identity, named in its first record:
//   chain_start  {"chain","writer","file","prev_file","prev_seq"[,"unanchored"][,"found"]}
// The token keeps the chain's *anchor*: its identity and where its latest seal is.
// Reopening the file (a restart, every keysvcctl run), the writer finds the anchored
// seal in the file and checks every line after it: a seal of this chain whose MAC
// verifies, or a stretch the token's pending mark names (records a writer without the
// token wrote), is accepted; then it continues the chain with
//   reopened     {"anchored","verified","vouched"}
// Anything else (records no seal covers: forged, or left by a process that died before
// sealing; a file that ends before the anchored seal; records the pending mark names
// that are gone) is never sealed over: the writer starts a new segment, a chain_start
// whose "found" states what it found ({"reason","lines","bytes","sha256","first_seq",
// "last_seq"[,"expected_seq","expected_hash"]}: reason "unsealed", "truncated", "deleted"
// or "foreign"), chained to the last line it accepted. A file with content but no anchor
// (written by a version before anchors, or whose anchor was swept) is checked as verify
// does and described in "unanchored" ({"lines","last_seq","seals","vouched"}).
//
// Seals. A "seal" record, written by seal() (the maintenance thread calls it every
// audit.seal_interval when records were added since the last seal) and by
// close()/rotate(), carries
//   "chain":  the chain's identity (32 hex digits),
//   "sealed": the seq of the last record it covers,
//   "head":   that record's hash,
//   "mac":    HMAC-SHA256 computed in the token with the audit key (audit_key.h) over
//             seal_message_v3(chain, sealed, head) = "keysvc audit seal v3" 00 chain(16)
//             sealed(8, big endian) head(32 raw bytes),
//   "key":    the audit key's CKA_ID in hex.
// The MAC is computed without holding the log's lock, so appends (handshake records on
// handshake threads) never wait for the HSM; records appended meanwhile come between
// the covered record and the seal, and the next seal covers them. Once the seal line is
// in the file (flushed), the anchor is updated in the token: a cut after any seal, or a
// copy rolled back, leaves the file ending before the token's anchor.
// Seals written by versions before v3 have no "chain" (v2: seal_message_v2(sealed, head);
// v1: no "sealed", seal_message(seq, head)); verify checks them as far as it can.
//
// Never written: key bytes, derived keys, IVs, PINs. The API takes typed events whose
// only identifiers are key names (public: they lead every ticket), token labels, PKCS#11
// return value names, operation names and file paths.
//
// Durability: append() queues the line on an spdlog async logger (one worker thread,
// blocking when its queue is full, never dropping). flush() returns only after every line
// appended before it is written to the file (fflush) and, with Options::fsync, fsync'ed:
// it posts spdlog's flush and waits for the sink to report that flush done (the worker
// thread handles messages in order). Lifecycle events are appended with append_durable(),
// i.e. append + flush, so a command reports success only after its event is on disk.
//
// Thread-safe. Sealing calls the token; an HSM failure while sealing is logged on the
// operational logger (log.h) and leaves the tail unsealed until the next seal, which the
// maintenance thread retries soon (AuditTrail::seal_due).
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "keysvc/hsm/secret_key.h"
#include "keysvc/key_name.h"
#include "keysvc/schedule.h"
#include "keysvc/usage.h"

namespace spdlog {
class logger;
namespace details {
class thread_pool;
}
}  // namespace spdlog

namespace keysvc::audit {

using Mac = std::array<std::uint8_t, 32>;
using Hash = std::array<std::uint8_t, 32>;
using ChainId = std::array<std::uint8_t, 16>;  // a chain's identity (random at its start)

class AnchorStore;  // audit_anchor.h

// The fixed labels seal MACs start with (20 bytes, then a 00 byte).
inline constexpr char kSealLabel[] = "keysvc audit seal v1";
inline constexpr char kSealLabelV2[] = "keysvc audit seal v2";
inline constexpr char kSealLabelV3[] = "keysvc audit seal v3";
// v1: label 00 seq(8, big endian) head(32), seq being the seal's own: what the token MACs
// for a seal written by versions before v2 (verify still checks them).
std::vector<std::uint8_t> seal_message(std::uint64_t seq, const Hash& head);
// v2: label 00 sealed(8, big endian) head(32), `sealed` being the seq of the last record
// the seal covers and `head` that record's hash.
std::vector<std::uint8_t> seal_message_v2(std::uint64_t sealed, const Hash& head);
// v3 (this version): label 00 chain(16) sealed(8, big endian) head(32): the seal names
// its chain, so a seal of another writer's file, or of another token's, never verifies.
std::vector<std::uint8_t> seal_message_v3(const ChainId& chain, std::uint64_t sealed, const Hash& head);

Hash sha256(std::string_view bytes);

// For verification: HMAC-SHA256 under the audit key whose CKA_ID is `key_id_hex`,
// computed in the token; std::nullopt if there is no such key (audit_key.h).
using KeyedHmac =
    std::function<std::optional<Mac>(std::string_view key_id_hex, std::span<const std::uint8_t> message)>;

// What a writer asks of the token (audit_key.h's token_sealer() fills it from a gateway).
// A writer whose login failed has no `hmac`: it never seals, and with `anchors` (public
// only: AnchorStore::public_only) it names what it wrote in the slot's pending mark, so
// that the next writer with the token seals exactly that. Without `anchors` seals are
// not anchored and reopening a file does not check it (tests of the record format only).
struct Sealer {
  std::string key_id_hex;  // the audit key's CKA_ID, written in every seal record
  std::function<Mac(std::span<const std::uint8_t> message)> hmac;
  KeyedHmac check;  // verifies seals found in the file when reopening it
  std::shared_ptr<AnchorStore> anchors;
};

// ---------------------------------------------------------------- events

struct GenerationCreated {
  KeyName name{};
  Schedule schedule;
  hsm::KeyCustody enc;  // as the token reports them (token_store::read_custody)
  hsm::KeyCustody mac;
};
struct Activated { KeyName name{}; };    // became the encrypt generation
// The token derived the generation's key for an epoch (the epoch tier): which generation
// and epoch number, never the key.
struct EpochKeyDerived {
  KeyName name{};
  std::int64_t epoch = 0;
};
struct DecryptOnly { KeyName name{}; };  // its encrypt window ended
struct Revoked { KeyName name{}; };
struct Destroyed { KeyName name{}; };
// Found in the token and refused by the custody check (key_custody.h): never used.
struct GenerationRefused {
  KeyName name{};
  std::string reason;  // what the check found, one line (no key bytes: attributes, schedule)
};
struct LoginFailed {
  std::string token;  // token label or URI (no PIN: URIs with pin-value must not be passed)
  std::string rv;     // "CKR_PIN_INCORRECT"
};
struct HsmError {
  std::string operation;  // "C_SignInit", "derive_for_open", ...
  std::string rv;
  std::uint64_t count = 1;  // errors of this kind since the previous record of it (rate limit)
};
struct ConfigLoaded { std::string path; };

// What happened to a ticket (usage.h; outcome_name() gives the names records use).
using Outcome = TicketOutcome;
inline constexpr std::size_t kOutcomeCount = kTicketOutcomeCount;

using UsageCounters = keysvc::UsageCounters;  // indexed by Outcome

// Counters per key name over [period_start, period_end) (Unix milliseconds).
// Record: {"event":"usage","period_start":ts,"period_end":ts,"keys":{"<hex>":{"issued":1,
// "resumed":0,"renewed":0,"rejected":{"unknown_key":0,...}}},...}; zero counters and keys
// with all-zero counters are still written as given.
struct UsageSummary {
  std::int64_t period_start_ms = 0;
  std::int64_t period_end_ms = 0;
  std::map<KeyName, UsageCounters> keys;
  bool empty() const;
};

// One handshake (optional, off by default: see Options::per_handshake).
struct Handshake {
  KeyName name{};
  Outcome outcome = Outcome::kIssued;
};

using Event = std::variant<GenerationCreated, Activated, EpochKeyDerived, DecryptOnly, Revoked, Destroyed,
                           GenerationRefused, LoginFailed, HsmError, ConfigLoaded, UsageSummary, Handshake>;

// ---------------------------------------------------------------- the log

// Where a chain stands: the last record's seq and the hash of its line.
struct ChainHead {
  std::string file;  // the file it is in (for chain_start's prev_file)
  std::uint64_t seq = 0;
  Hash hash{};
};

class AuditLog {
 public:
  struct Options {
    std::string host;  // empty: gethostname()
    // If set, called by summarize() and at close(); non-empty summaries are written
    // (AuditTrail: the differences of the service's counters, usage.h).
    std::function<UsageSummary()> usage_source;
    // Whether Handshake events are written (else append() drops them).
    bool per_handshake = false;
    // Who writes ("server", "keysvcctl"): in the chain_start record and the anchor.
    std::string writer = "server";
    // When this writer starts a new anchor, anchors and pending marks of other writers
    // last changed longer ago than this are removed from the token (0: never).
    std::chrono::milliseconds anchor_retention{0};
    bool fsync = true;  // flush() also fsyncs the file
    // Wall clock, injectable for tests.
    std::function<std::chrono::system_clock::time_point()> clock;
  };

  // Opens (appends to) `path`: with the token, checks what follows the anchored seal
  // (above) and writes reopened, or a chain_start (a new chain, or a new segment stating
  // what it found); without it, continues after the last complete line (chain_start if
  // the file is empty). Flushes. Throws std::runtime_error if the file cannot be opened,
  // hsm::Error if the token fails.
  AuditLog(const std::string& path, Sealer sealer, Options options);
  ~AuditLog();  // close()
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Queues the event's record; returns its seq (0 if dropped: Handshake with
  // per_handshake off, or after close()).
  std::uint64_t append(const Event& event);
  // append() + flush(): for lifecycle events, before the command reports success.
  // Throws what flush() throws.
  std::uint64_t append_durable(const Event& event);
  // Waits until every record appended so far is in the file (see above). Throws
  // std::runtime_error if writing, flushing or fsync'ing the file has failed.
  void flush();
  // Writes a seal record now (if any record follows the last seal), flushes and updates
  // the anchor (also retried alone when only that failed last time). The MAC is computed
  // without the log's lock held (see above). Throws what the Sealer throws.
  void seal();
  // Whether a seal() would do something: records after the last seal, or an anchor update
  // that failed.
  bool seal_due() const;
  // Writes a usage record from Options::usage_source if it has counts.
  void summarize();
  // Seals, closes this file and continues the chain in `new_path` (chain_start first,
  // sealed at once, so the new file has its own anchor). `new_path` must be empty.
  void rotate(const std::string& new_path);
  // Writes the final usage summary (usage_source), stops taking records, seals, flushes
  // and closes; without the token, names its unsealed records in the pending mark.
  // Idempotent; never throws (failures go to the operational log).
  void close() noexcept;

  ChainHead head() const;
  std::string path() const;  // the current file

 private:
  struct File;
  struct Anchoring;
  std::uint64_t write_locked(const std::string& event, const std::string& fields);
  // The seal of everything up to the head: MAC in the token (no lock held), written,
  // flushed, then the anchor updated.
  void seal_unlocked();
  // Gives the token the anchor of the latest seal (no lock held). Throws if it fails (the
  // next seal tries again).
  void store_anchor();
  // Without the token: names this writer's records in the slot's pending mark.
  void mark_pending();
  void open_file_locked(const std::string& path, std::uint64_t bytes);
  void close_file_locked();
  std::int64_t now_ms() const;

  Sealer sealer_;
  Options options_;
  int pid_ = 0;
  mutable std::mutex mutex_;
  std::unique_ptr<File> file_;
  ChainHead head_;
  std::int64_t last_ts_ = 0;  // ts of the last record (records never go back in time)
  std::uint64_t last_seal_seq_ = 0;
  bool taking_ = true;  // append() takes records (not once close() began the final seal)
  bool closed_ = false;
  std::unique_ptr<Anchoring> anchoring_;
  std::mutex seal_mutex_;  // one seal at a time; taken before mutex_, never after
};

// "2026-11-23T12:00:00.123Z"
std::string iso8601_ms(std::int64_t unix_ms);

}  // namespace keysvc::audit
