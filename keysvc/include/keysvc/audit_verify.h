// Checking audit logs written by AuditLog (audit_log.h); summarising them is
// audit_report.h.
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
//   unsealed_tail  the chain is intact, but records follow the last seal (the named line
//                  is the first unsealed one; an incomplete last line counts too): what a
//                  running writer's file looks like between two seals. Nothing vouches
//                  for those records yet (anyone who can write the file could have
//                  rewritten them); everything up to the last seal is verified
//                  (VerifyResult::last_seal_*)
//   malformed      a line that is not a record although nothing shows it was changed
//                  (a file that is not an audit log, an empty file, no files, a file
//                  that cannot be read: the detail names the OS's reason)
// Hostile input gives a result, never a crash: records are parsed with nlohmann-json,
// bounded (line length, nesting depth), and the chain is hashed over the lines' bytes.
#pragma once

#include <cstdint>
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
  std::uint64_t records = 0;       // records checked (chain intact up to the last of them)
  std::uint64_t seals = 0;         // seals verified
  bool from_genesis = false;       // the first file starts the chain (prev_seq 0)
  std::uint64_t last_seq = 0;      // seq of the last record checked
  // The last seal verified (line 0: none). Every line up to it is covered by a seal the
  // token made, whatever the result says about the lines after it.
  std::string last_seal_file;
  std::size_t last_seal_line = 0;
  std::uint64_t last_seal_seq = 0;
  std::int64_t last_seal_ts = 0;   // Unix ms
  // With kUnsealedTail: the lines after the last seal (the incomplete last line included).
  std::uint64_t pending = 0;
  bool incomplete_last_line = false;
};

// A file's name and its whole contents.
using LogText = std::pair<std::string, std::string>;

// The whole file at `path`; std::nullopt with `error` set to the OS's reason ("Permission
// denied", "No such file or directory", "Is a directory") if it cannot be read.
std::optional<std::string> read_log_file(const std::string& path, std::string& error);

// Reads the files (a file that cannot be read is a malformed failure at line 1, detail
// "cannot read the file (REASON)") and verifies them. Throws only what `hmac` throws
// (the token failing).
VerifyResult verify(const std::vector<std::string>& files, const KeyedHmac& hmac);
VerifyResult verify_texts(const std::vector<LogText>& files, const KeyedHmac& hmac);

// "2026-11-23T12:00:00Z", "2026-11-23T12:00:00.123Z", "2026-11-23" or Unix seconds
// ("1795435200") -> Unix milliseconds.
std::optional<std::int64_t> parse_time(std::string_view text);

}  // namespace keysvc::audit
