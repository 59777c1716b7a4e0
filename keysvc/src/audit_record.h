// Reading audit records (the lines AuditLog writes, audit_log.h) for verify and report.
//
// A line is parsed with nlohmann-json into its fields; the chain itself is checked over the
// line's raw bytes (Line::hash), never over a re-serialisation. Parsing is bounded (line
// length, nesting depth) and never throws: a line that is not a record is std::nullopt.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keysvc/audit_log.h"
#include "keysvc/audit_verify.h"

namespace keysvc::audit::detail {

// A parsed record: the fields every record has, and the whole object for the rest.
struct Record {
  std::uint64_t seq = 0;
  std::int64_t ts = 0;  // Unix ms
  std::string event;
  Hash prev{};
  nlohmann::json obj;

  // The member `key` if it is a string / a non-negative integer, else nullptr / nullopt.
  const std::string* string_field(std::string_view key) const;
  std::optional<std::uint64_t> uint_field(std::string_view key) const;
};

// The record on `line` (without its '\n'), or std::nullopt if the line is not one: not a
// JSON object written without surrounding whitespace, nested deeper than the writer
// nests, longer than 1 MiB, or missing a positive "seq", an ISO-8601 "ts", a string
// "event" or a 64-hex-digit "prev".
std::optional<Record> parse_record(std::string_view line);

// The same member of a JSON object, for nested objects ("keys" of a usage record).
std::optional<std::uint64_t> uint_member(const nlohmann::json& object, std::string_view key);

// 64 lowercase hex digits -> 32 bytes.
std::optional<Hash> hash_from_hex(std::string_view hex);

// "YYYY-MM-DD" (only if `date_alone_ok`) or "YYYY-MM-DDTHH:MM:SS[.mmm]Z" -> Unix ms.
std::optional<std::int64_t> parse_iso(std::string_view s, bool date_alone_ok);

// One line of a log file, split on '\n'.
struct Line {
  std::size_t file = 0;    // index into the files given
  std::size_t number = 0;  // 1-based
  std::string_view raw;    // without its '\n'
  bool terminated = true;  // false: the file's last line, without '\n'
  Hash hash{};             // SHA-256 of raw (only if split(..., true))
  std::optional<Record> rec;  // (only if split(..., true))
};

// Every line of every file, in order. With `parse_all`, hashes and parses each line,
// keeping Record::obj only for "seal" and "chain_start" records (what verify reads).
std::vector<Line> split(const std::vector<LogText>& files, bool parse_all);

// SHA-256 over lines[from, to), each line's bytes followed by '\n' (what a writer that
// found them states in chain_start's "found").
Hash region_hash(const std::vector<Line>& lines, std::size_t from, std::size_t to);

// The chain a v3 chain_start or seal names ("chain"), if it names one.
std::optional<ChainId> chain_of(const Record& rec);

// What checking the seal at lines[i] found. `chain`: the segment's chain (a v3 chain_start
// before it), else the seal must be v1/v2. `lowest`: the first line it may cover.
struct SealCheck {
  bool ok = false;
  std::size_t covered = 0;  // ok: index of the record it covers
  std::uint64_t covered_seq = 0;
  std::string detail;       // !ok: why (for a bad_seal failure)
};
// Without `hmac` the MAC is not checked (ok if the rest holds).
SealCheck check_seal(const std::vector<Line>& lines, std::size_t i, std::size_t lowest,
                     const std::optional<ChainId>& chain, const KeyedHmac& hmac);

// At most `max` bytes of `s`, control and non-ASCII bytes as '?': a field from a file
// quoted in a one-line detail.
std::string printable(std::string_view s, std::size_t max);

}  // namespace keysvc::audit::detail
