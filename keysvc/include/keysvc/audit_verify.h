// Checking audit logs written by AuditLog (audit_log.h); summarising them is
// audit_report.h.
//
// verify() walks the records of FILES in order as one chain (a file and its rotated
// predecessors, oldest first) and stops at the first problem, naming the line where it is:
//   edited         a line's bytes changed (its successor's "prev" no longer matches, its
//                  "seq" is out of step although its "prev" matches, or it no longer
//                  parses while its successor shows it was changed; also lines a writer
//                  found and described that changed since)
//   deleted        a record is missing (the next record's seq skips; a missing file in
//                  the middle, a removed seal; records cut from the front of a file the
//                  token anchors; records a writer without the token wrote, named by the
//                  token's pending mark, that are gone)
//   reordered      a record is out of place (the skipped seq shows up later, or seq goes
//                  back; a first file that does not start with chain_start; a record
//                  whose ts is earlier than the one before it, from a v3 chain_start on)
//   bad_seal       a seal's head is not its predecessor's hash, its key is unknown to the
//                  token, its chain is not the segment's, or its MAC does not verify
//   truncated      the file ends before the seal the token's anchor names: cut after a
//                  seal, or rolled back to an older copy (also as found by a writer)
//   unverified_tail  records that no seal covers, found by the writer that reopened the
//                  file after them and did not seal over them (forged, or left by a process
//                  that stopped without sealing): the named line is the first of them
//   foreign        a file of another writer or another token: the token has no anchor for
//                  its chain (and it is not older than the anchor retention), or anchors
//                  another chain for this file
//   unsealed_tail  the chain is intact, but records follow the last seal (the named line
//                  is the first unsealed one; an incomplete last line counts too): what a
//                  running writer's file looks like between two seals, or records a
//                  writer without the token wrote (the token's pending mark names them;
//                  the next writer with the token seals them). Nothing vouches for those
//                  records yet; everything up to the last seal is verified
//                  (VerifyResult::last_seal_*)
//   malformed      a line that is not a record although nothing shows it was changed
//                  (a file that is not an audit log, an empty file, no files, a file
//                  that cannot be read: the detail names the OS's reason)
// What verify can check depends on the TokenView: without `hmac` no seal is checked,
// without `anchors` nothing is compared with the token's anchors (VerifyResult::unchecked
// says what was not). Logs of versions before anchors (v1/v2 seals, no chain) verify as
// far as they can: chain and seals, not a cut after the last seal or a rollback
// (VerifyResult::legacy).
// Hostile input gives a result, never a crash: records are parsed with nlohmann-json,
// bounded (line length, nesting depth), and the chain is hashed over the lines' bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keysvc/audit_anchor.h"
#include "keysvc/audit_log.h"

namespace keysvc::audit {

enum class Failure {
  kNone,
  kEdited,
  kDeleted,
  kReordered,
  kBadSeal,
  kUnsealedTail,
  kMalformed,
  kTruncated,
  kUnverifiedTail,
  kForeign
};
std::string_view to_string(Failure f);  // "ok", "edited", "deleted", ...

// What verify asks of the token. Every member may be empty (not checked).
struct TokenView {
  KeyedHmac hmac;                         // seals' MACs (token_keyed_hmac)
  std::shared_ptr<AnchorStore> anchors;   // anchors and pending marks (AnchorStore::on_gateway)
  std::string host;                       // the verifying host: a file verified where its writer
                                          // writes it must be the chain the token anchors there
  std::chrono::milliseconds retention{0}; // audit.anchor_retention (0: anchors never expire)
  std::int64_t now_ms = 0;                // for the retention
  TokenView() = default;
  TokenView(KeyedHmac h) : hmac(std::move(h)) {}  // NOLINT: seals only, as before anchors
};

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
  // Lines from the start of the files covered by a verified seal (the walk's accepted part).
  std::size_t covered = 0;
  // With kUnsealedTail: the lines after the last seal (the incomplete last line included).
  std::uint64_t pending = 0;
  bool incomplete_last_line = false;
  bool pending_marked = false;     // the token's pending mark names those lines
  // The chain's identity (hex) and what the token's anchor said, if it was checked.
  std::string chain;
  bool anchored = false;           // the last file's anchor was found and agreed
  std::uint64_t anchor_seal = 0;   // the seal it names
  std::int64_t anchor_sealed_at = 0;
  // Lines before a chain_start that its writer found without an anchor ("unanchored"),
  // and whether the whole log is of a version before anchors.
  std::uint64_t unanchored_lines = 0;
  bool legacy = false;
  // What could not be checked, one line ("" when everything was): seals without a token,
  // anchors not asked, a swept anchor.
  std::string unchecked;
};

// A file's name and its whole contents.
using LogText = std::pair<std::string, std::string>;

// The whole file at `path`; std::nullopt with `error` set to the OS's reason ("Permission
// denied", "No such file or directory", "Is a directory") if it cannot be read.
std::optional<std::string> read_log_file(const std::string& path, std::string& error);

// Reads the files (a file that cannot be read is a malformed failure at line 1, detail
// "cannot read the file (REASON)") and verifies them; a file found to end before its
// anchor is read again (up to three times), since a running writer may have sealed and
// moved its anchor after the file was read. Throws only what the token throws.
VerifyResult verify(const std::vector<std::string>& files, const TokenView& token);
VerifyResult verify_texts(const std::vector<LogText>& files, const TokenView& token);

// "2026-11-23T12:00:00Z", "2026-11-23T12:00:00.123Z", "2026-11-23" or Unix seconds
// ("1795435200") -> Unix milliseconds.
std::optional<std::int64_t> parse_time(std::string_view text);

}  // namespace keysvc::audit
