// Audit heads anchored in the token: where each writer's chain stands, kept where whoever
// can write the audit files cannot reach (docs/AUDIT.md, "Anchors"; the object layout is
// docs/TOKEN-LAYOUT.md, "Audit anchors").
//
// A *writer slot* is one file as one host's writer writes it: (host name, absolute path).
// Each slot has at most one anchor, a private data object updated after every seal:
//
//   CKO_DATA  CKA_APPLICATION "keysvc", CKA_LABEL "keysvc-audit-anchor <slot id>",
//             CKA_PRIVATE TRUE, CKA_MODIFIABLE TRUE, CKA_VALUE = Anchor::format()
//
// (slot id: the first 16 bytes of SHA-256(host "\n" path), in hex). A writer without the
// token (its login failed) cannot touch private objects; it leaves a *pending mark*
// instead, a public data object naming the records it wrote unsealed, so that the next
// writer with the token can seal exactly those and notice if any went missing:
//
//   CKO_DATA  CKA_APPLICATION "keysvc", CKA_LABEL "keysvc-audit-pending <slot id>",
//             CKA_PRIVATE FALSE, CKA_MODIFIABLE TRUE, CKA_VALUE = PendingMark::format()
//
// Neither holds a secret. Both are removed by sweep() once older than the retention
// (audit.anchor_retention), so their number stays bounded by the writers active within it.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keysvc/audit_log.h"
#include "keysvc/config.h"
#include "keysvc/hsm/session.h"

namespace keysvc {
class TokenGateway;
}

namespace keysvc::audit {

inline constexpr char kAnchorLabelPrefix[] = "keysvc-audit-anchor ";
inline constexpr char kPendingLabelPrefix[] = "keysvc-audit-pending ";
// How many unsealed stretches one pending mark names at most (oldest dropped first: their
// records then show as an unverified tail).
inline constexpr std::size_t kMaxPendingRanges = 32;

// One writer's file: whose anchor is whose.
struct WriterSlot {
  std::string host;
  std::string file;  // absolute, lexically normal
  // 32 hex digits: the first 16 bytes of SHA-256(host "\n" file).
  std::string id() const;
  std::string anchor_label() const { return kAnchorLabelPrefix + id(); }
  std::string pending_label() const { return kPendingLabelPrefix + id(); }
  // The slot of `path` as written on `host` (the path made absolute and lexically normal).
  static WriterSlot of(std::string host, const std::string& path);
};

// Where a writer's chain stands in its file, as of its latest seal.
struct Anchor {
  ChainId chain{};
  std::string writer;  // "server", "keysvcctl", ... (AuditLog::Options::writer)
  std::string host, file;
  std::int64_t created_ms = 0;  // when the chain was started in this file
  std::uint64_t first = 1;      // seq of the file's first record (its chain_start)
  // The latest seal: it covers the record `sealed` (line hash `head`); the seal record
  // itself is seq `seal`, its line hashes to `seal_hash` and ends at byte `offset` of the
  // file (just after its '\n'). All 0 before the first seal.
  std::uint64_t sealed = 0;
  Hash head{};
  std::uint64_t seal = 0;
  Hash seal_hash{};
  std::uint64_t offset = 0;
  std::int64_t sealed_at_ms = 0;

  // "keysvc-audit-anchor v1\nchain=...\n..." (docs/TOKEN-LAYOUT.md).
  std::string format() const;
  // std::nullopt if `text` is not a v1 anchor value.
  static std::optional<Anchor> parse(std::string_view text);
  // When it last changed (for the retention).
  std::int64_t touched_ms() const { return sealed_at_ms ? sealed_at_ms : created_ms; }
};

// Records a writer without the token appended unsealed: each range is a stretch of
// records first_seq..last_seq whose first record chains to `prev` and whose last line
// hashes to `last`.
struct PendingRange {
  std::uint64_t first_seq = 0, last_seq = 0;
  Hash prev{}, last{};
};
struct PendingMark {
  std::int64_t written_ms = 0;
  std::vector<PendingRange> ranges;  // in file order
  std::string format() const;
  static std::optional<PendingMark> parse(std::string_view text);
};

// What the token holds for one slot.
struct SlotState {
  std::optional<Anchor> anchor;
  std::optional<PendingMark> pending;
};

// Reads and writes anchors and pending marks. Every operation is one trip to the token
// (through the gateway's maintenance lane for on_gateway(); on a public session of its
// own for public_only()). Thread-safe. Throws hsm::Error / hsm::Pkcs11Error.
class AnchorStore {
 public:
  // Runs work(session) on some session of the token (must own what work captures).
  using Runner = std::function<void(std::function<void(hsm::Session&)>)>;

  // A logged-in writer or verifier: anchors and pending marks. The gateway must outlive it.
  static std::shared_ptr<AnchorStore> on_gateway(TokenGateway& gateway);
  // A writer whose login failed: pending marks only (load() finds no anchor: a public
  // session does not see private objects; store() and sweep() throw).
  static std::shared_ptr<AnchorStore> public_only(const Config& config);

  explicit AnchorStore(Runner run, bool logged_in);

  bool logged_in() const noexcept { return logged_in_; }
  // The slot's anchor and pending mark (one trip).
  SlotState load(const WriterSlot& slot);
  // Creates or updates the slot's anchor. Tokens that refuse to change a data object's
  // value get a new object in place of the old one.
  void store(const WriterSlot& slot, const Anchor& anchor);
  // Replaces the slot's pending mark (a writer without the token adds its range).
  void set_pending(const WriterSlot& slot, const PendingMark& mark);
  // Removes the slot's pending mark (its records are sealed now).
  void clear_pending(const WriterSlot& slot);
  // Removes every anchor and pending mark last changed before `now_ms - retention`,
  // except `keep`'s; returns how many.
  std::size_t sweep(std::chrono::milliseconds retention, std::int64_t now_ms, const WriterSlot& keep);

 private:
  struct Handles;  // object handles per label, per module generation (no search per seal)
  Runner run_;
  bool logged_in_;
  std::shared_ptr<Handles> handles_;
};

// This host's name (gethostname), as writers record it.
std::string this_host();

// A fresh random chain id.
ChainId new_chain_id();
// 32 hex digits -> ChainId.
std::optional<ChainId> chain_id_from_hex(std::string_view hex);

}  // namespace keysvc::audit
