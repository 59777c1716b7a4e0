// Summarising audit logs written by AuditLog (audit_log.h) for people: per generation its
// lifecycle and ticket usage, usage over time, where the seals are, and anomalies.
// report() reads the files only; whether to trust them is verify()'s answer
// (audit_verify.h). `keysvcctl audit report` prints it as text, JSON or an HTML page.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keysvc/audit_verify.h"

namespace keysvc::audit {

// Where a record is: the index of its file among those given, its 1-based line, its "ts".
struct RecordRef {
  std::size_t file = 0;
  std::size_t line = 0;
  std::int64_t at = 0;  // Unix ms
};

// A lifecycle record naming a generation.
struct LifecycleMark {
  std::string event;  // "generation_created", "activated", "decrypt_only", "revoked", "destroyed"
  RecordRef where;
};

struct KeyReport {
  std::string name;  // 32 hex digits
  // Unix milliseconds of the records naming the key (std::nullopt: none in range); for
  // the lifecycle events, the earliest such record (a revocation is recorded by
  // keysvcctl and again by each server that sees it).
  std::optional<std::int64_t> first_seen, last_seen, created, activated, decrypt_only, revoked, destroyed;
  // Its schedule, from its generation_created record (Unix ms), if one is in range.
  std::optional<std::int64_t> encrypt_from, encrypt_until, decrypt_until;
  UsageCounters totals{};  // summed over "usage" records (not "handshake" records)
  std::vector<LifecycleMark> marks;  // its lifecycle records in range, in file order
  std::uint64_t rejected() const;
};

struct Anomaly {
  // "unknown_key_name": tickets presented under a name no generation has;
  // "ticket_under_revoked_key": tickets presented under a revoked generation (and
  //   refused: the server knew);
  // "used_after_revocation": tickets issued or resumed under a generation in a usage
  //   period that starts after a revoked record of it (a period spanning the revocation
  //   is not counted: its uses may all have come before it);
  // "issued_after_decrypt_only": tickets issued under a generation in a usage period that
  //   starts after it stopped encrypting: after its decrypt_only record, or after the
  //   activated record of a generation whose encrypt_from is later than its own (unless
  //   it was activated again since; not counted when used_after_revocation is);
  // "mac_failure_spike": one usage record with at least ReportOptions::mac_failure_spike
  //   MAC failures (over all keys).
  // The first two are counted in every usage record; the revocation and decrypt-only
  // rules use every record of the files, also those outside [since, until). A server
  // sees keysvcctl's changes within rotation.refresh_interval, so `keys revoke` and `keys
  // generate` (which switch at once) can show a few uses of the old generation until then.
  std::string kind;
  std::string name;  // key name (empty for spikes)
  std::int64_t at = 0;  // Unix ms of the first record showing it
  std::uint64_t count = 0;
  std::string file;  // where the first record showing it is
  std::size_t line = 0;
  std::size_t file_index = 0;
  std::int64_t last_at = 0;  // Unix ms of the last record showing it
};

struct ReportOptions {
  std::optional<std::int64_t> since;  // Unix ms, inclusive
  std::optional<std::int64_t> until;  // Unix ms, exclusive
  std::uint64_t mac_failure_spike = 10;
};

// One usage record: its outcomes over all key names, over [start, end).
struct UsagePeriod {
  std::int64_t start = 0, end = 0;  // Unix ms: period_start, period_end ("ts" if missing)
  RecordRef where;
  UsageCounters totals{};
};

struct SealMark {
  std::uint64_t seq = 0;
  RecordRef where;
};

struct FileSummary {
  std::string name;           // as given
  std::string error;          // why it could not be read ("" if it was)
  std::uint64_t records = 0;  // records in range
  std::optional<std::int64_t> first, last;  // "ts" of its first and last record in range
};

struct Report {
  std::vector<KeyReport> keys;  // ordered by name
  std::vector<Anomaly> anomalies;
  std::uint64_t records = 0;    // records in range
  std::uint64_t unreadable = 0; // lines that are not records (skipped)
  std::map<std::string, std::uint64_t> events;  // records in range by event
  std::vector<UsagePeriod> usage;  // usage records in range, in file order
  std::vector<SealMark> seals;     // seal records in range, in file order (not verified here)
  std::vector<FileSummary> files;  // one per file given
};

// Reads records (without checking the chain: run verify for that) whose "ts" lies in
// [since, until). Unreadable files (FileSummary::error) and lines are skipped; lines are
// counted.
Report report(const std::vector<std::string>& files, const ReportOptions& options);
Report report_texts(const std::vector<LogText>& files, const ReportOptions& options);

}  // namespace keysvc::audit
