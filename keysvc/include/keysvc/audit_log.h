// keysvc's audit trail: a tamper-evident JSON Lines file, sealed in the HSM.
//
// Every record is one line, built here byte for byte (spdlog only carries it: the sink's
// pattern is "%v"), so the hash chain is over exactly the bytes in the file:
//
//   {"seq":7,"ts":"2026-11-23T12:00:00.123Z","host":"h","pid":42,"event":"revoked",
//    "name":"<32 hex>","prev":"<64 hex>"}
//
//   seq   1, 2, 3, ... over the whole chain, across rotated files
//   ts    UTC, milliseconds
//   prev  hex SHA-256 of the previous line's bytes (without its '\n'); for the very
//         first record of a chain, 64 zeros
//
// Each file starts with a "chain_start" record ({"prev_file","prev_seq"} name the end of
// the previous file; "prev" is the hash of its last line, so files chain too). A "seal"
// record, written by seal() (the maintenance thread calls it every audit.seal_interval
// when records were added since the last seal) and by close()/rotate(), carries
//   "sealed": the seq of the last record it covers,
//   "head": that record's hash,
//   "mac":  HMAC-SHA256 computed in the token with the audit key (audit_key.h) over
//           seal_message_v2(sealed, head) = "keysvc audit seal v2" 00 sealed(8, big
//           endian) head(32 raw bytes),
//   "key":  the audit key's CKA_ID in hex.
// The MAC is computed without holding the log's lock, so appends (handshake records on
// handshake threads) never wait for the HSM; records appended meanwhile come between
// the covered record and the seal, and the next seal covers them.
// What is covered: every line up to the last seal's "sealed" record (and the seal
// itself when nothing came between).
// Not covered: lines after the last seal (verify reports them as an unsealed tail), and
// a cut made exactly after a seal (nothing inside the file can tell; keep the last
// seal's seq elsewhere if that matters).
//
// Never written: key bytes, derived keys, IVs, PINs. The API takes typed events whose
// only identifiers are key names (public: they lead every ticket), token labels, PKCS#11
// return value names, operation names and file paths.
//
// Seals written by versions before v2 have no "sealed" (they cover their prev, under
// seal_message()); verify checks both.
//
// Durability: append() queues the line on an spdlog async logger (one worker thread,
// blocking when its queue is full, never dropping). flush() returns only after every line
// appended before it is written to the file (fflush) and, with Options::fsync, fsync'ed:
// it posts spdlog's flush and waits for the sink to report that flush done (the worker
// thread handles messages in order). Lifecycle events are appended with append_durable(),
// i.e. append + flush, so a command reports success only after its event is on disk.
//
// Thread-safe. Sealing calls the token; an HSM failure while sealing is logged on the
// operational logger (log.h) and leaves the tail unsealed until the next seal.
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

// The fixed labels seal MACs start with (20 bytes, then a 00 byte).
inline constexpr char kSealLabel[] = "keysvc audit seal v1";
inline constexpr char kSealLabelV2[] = "keysvc audit seal v2";
// v1: label 00 seq(8, big endian) head(32), seq being the seal's own: what the token MACs
// for a seal written by versions before v2 (verify still checks them).
std::vector<std::uint8_t> seal_message(std::uint64_t seq, const Hash& head);
// v2: label 00 sealed(8, big endian) head(32), `sealed` being the seq of the last record
// the seal covers and `head` that record's hash.
std::vector<std::uint8_t> seal_message_v2(std::uint64_t sealed, const Hash& head);

std::string hex(std::span<const std::uint8_t> bytes);
Hash sha256(std::string_view bytes);

// Computes the seal MAC in the token: HMAC-SHA256 under the audit key over `message`.
// An empty `hmac` never seals (a writer that could not log in to the token: its records
// stay unsealed until a later writer of the same file seals, which covers them).
struct Sealer {
  std::string key_id_hex;  // the audit key's CKA_ID, written in every seal record
  std::function<Mac(std::span<const std::uint8_t> message)> hmac;
};

// For verification: HMAC-SHA256 under the audit key whose CKA_ID is `key_id_hex`,
// computed in the token; std::nullopt if there is no such key (audit_key.h).
using KeyedHmac =
    std::function<std::optional<Mac>(std::string_view key_id_hex, std::span<const std::uint8_t> message)>;

// ---------------------------------------------------------------- events

struct GenerationCreated {
  KeyName name{};
  Schedule schedule;
  hsm::KeyCustody enc;  // as the token reports them (token_store::read_custody)
  hsm::KeyCustody mac;
};
struct Activated { KeyName name{}; };    // became the encrypt generation
struct DecryptOnly { KeyName name{}; };  // its encrypt window ended
struct Revoked { KeyName name{}; };
struct Destroyed { KeyName name{}; };
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

using Event = std::variant<GenerationCreated, Activated, DecryptOnly, Revoked, Destroyed, LoginFailed, HsmError,
                           ConfigLoaded, UsageSummary, Handshake>;

// ---------------------------------------------------------------- the log

// Where a chain stands: the last record's seq and the hash of its line.
struct ChainHead {
  std::string file;  // the file it is in (for chain_start's prev_file)
  std::uint64_t seq = 0;
  Hash hash{};
};

// The head of an existing log file (its last complete line), or std::nullopt if the file
// is missing, empty or its last line is not a record. For continuing a chain after a
// restart: Options::previous.
std::optional<ChainHead> read_head(const std::string& path);

class AuditLog {
 public:
  struct Options {
    std::string host;  // empty: gethostname()
    // If set, called by summarize() and at close(); non-empty summaries are written
    // (AuditTrail: the differences of the service's counters, usage.h).
    std::function<UsageSummary()> usage_source;
    // Whether Handshake events are written (else append() drops them).
    bool per_handshake = false;
    // Continue this chain (the file's first record links to it). nullopt: continue the
    // chain of `path` itself if it already ends in a record (a restart appending to the
    // same file), else start a new chain.
    std::optional<ChainHead> previous;
    bool fsync = true;  // flush() also fsyncs the file
    // Wall clock, injectable for tests.
    std::function<std::chrono::system_clock::time_point()> clock;
  };

  // Opens (appends to) `path`, writes a chain_start record and flushes. Throws
  // std::runtime_error if the file cannot be opened.
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
  // Writes a seal record now (if any record follows the last seal) and flushes. The MAC
  // is computed without the log's lock held (see above). Throws what the Sealer throws.
  void seal();
  // Writes a usage record from Options::usage_source if it has counts.
  void summarize();
  // Seals, closes this file and continues the chain in `new_path` (chain_start first).
  void rotate(const std::string& new_path);
  // Writes the final usage summary (usage_source), seals, flushes and closes. Idempotent;
  // never throws (failures go to the operational log).
  void close() noexcept;

  ChainHead head() const;
  std::string path() const;  // the current file

 private:
  struct File;
  std::uint64_t write_locked(const std::string& event, const std::string& fields);
  // The seal of everything up to the head: MAC in the token (no lock held), then written.
  void seal_unlocked();
  void open_locked(const std::string& path);
  void close_file_locked();
  std::int64_t now_ms() const;

  Sealer sealer_;
  Options options_;
  int pid_ = 0;
  mutable std::mutex mutex_;
  std::unique_ptr<File> file_;
  ChainHead head_;
  std::uint64_t last_seal_seq_ = 0;
  bool closed_ = false;
  std::mutex seal_mutex_;  // one seal at a time; taken before mutex_, never after
};

// "2026-11-23T12:00:00.123Z"
std::string iso8601_ms(std::int64_t unix_ms);

}  // namespace keysvc::audit
