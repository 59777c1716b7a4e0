// Checking and summarising audit logs written by AuditLog (audit_log.h).
//
// verify() walks the records of FILES in order as one chain and stops at the first
// problem, naming the line where the chain first breaks:
//   edited         a line's bytes changed (its successor's "prev" no longer matches, its
//                  "seq" is out of step although its "prev" matches, or it no longer
//                  parses while its successor shows it was changed)
//   deleted        a record is missing (the next record's seq skips; also a missing file
//                  in the middle, or a removed seal)
//   reordered      a record is out of place (the skipped seq shows up later, or seq goes
//                  back; also a first file that does not start with chain_start)
//   bad_seal       a seal's head is not its predecessor's hash, its key is unknown to the
//                  token, or its MAC does not verify in the token
//   unsealed_tail  records after the last seal (the named line is the first unsealed
//                  one); also an incomplete last line
//   malformed      a line that is not a record although nothing shows it was changed
//                  (a file that is not an audit log, an empty file, no files)
// Hostile input gives a result, never a crash: parsing is bounded (nesting depth, number
// sizes) and works on bytes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keysvc/audit_log.h"

namespace keysvc::audit {

enum class Failure { kNone, kEdited, kDeleted, kReordered, kBadSeal, kUnsealedTail, kMalformed };
std::string_view to_string(Failure f);  // "ok", "edited", "deleted", ...

struct VerifyResult {
  bool ok = false;
  Failure reason = Failure::kNone;
  std::string first_bad_file;      // as given
  std::size_t first_bad_line = 0;  // 1-based
  std::string detail;              // one line, for people
  std::uint64_t records = 0;       // records checked
  std::uint64_t seals = 0;         // seals verified
  bool from_genesis = false;       // the first file starts the chain (prev_seq 0)
  std::uint64_t last_seq = 0;      // seq of the last record
};

// A file's name and its whole contents.
using LogText = std::pair<std::string, std::string>;

// Reads the files (a file that cannot be read is a malformed failure at line 1) and
// verifies them. Throws only what `hmac` throws (the token failing).
VerifyResult verify(const std::vector<std::string>& files, const KeyedHmac& hmac);
VerifyResult verify_texts(const std::vector<LogText>& files, const KeyedHmac& hmac);

// ---------------------------------------------------------------- report

struct KeyReport {
  std::string name;  // 32 hex digits
  // Unix milliseconds of the records naming the key (std::nullopt: none in range).
  std::optional<std::int64_t> first_seen, last_seen, created, activated, decrypt_only, revoked, destroyed;
  UsageCounters totals{};  // summed over "usage" records (not "handshake" records)
  std::uint64_t rejected() const;
};

struct Anomaly {
  // "unknown_key_name": tickets presented under a name no generation has;
  // "ticket_under_revoked_key": tickets presented under a revoked generation;
  // "used_after_revocation": tickets issued or resumed under a key after its revoked record;
  // "mac_failure_spike": one usage record with at least ReportOptions::mac_failure_spike
  // MAC failures (over all keys).
  std::string kind;
  std::string name;  // key name (empty for spikes)
  std::int64_t at = 0;  // Unix ms of the (first) record showing it
  std::uint64_t count = 0;
  std::string file;
  std::size_t line = 0;
};

struct ReportOptions {
  std::optional<std::int64_t> since;  // Unix ms, inclusive
  std::optional<std::int64_t> until;  // Unix ms, exclusive
  std::uint64_t mac_failure_spike = 10;
};

struct Report {
  std::vector<KeyReport> keys;  // ordered by name
  std::vector<Anomaly> anomalies;
  std::uint64_t records = 0;    // records in range
  std::uint64_t unreadable = 0; // lines that are not records (skipped)
  std::map<std::string, std::uint64_t> events;  // records in range by event
};

// Reads records (without checking the chain: run verify for that) whose "ts" lies in
// [since, until). Unreadable files and lines are skipped and counted.
Report report(const std::vector<std::string>& files, const ReportOptions& options);
Report report_texts(const std::vector<LogText>& files, const ReportOptions& options);

// "2026-11-23T12:00:00Z", "2026-11-23T12:00:00.123Z", "2026-11-23" or Unix seconds
// ("1795435200") -> Unix milliseconds.
std::optional<std::int64_t> parse_time(std::string_view text);

}  // namespace keysvc::audit
