// verify()'s comparisons with the token's anchors and pending marks (audit_verify.h,
// audit_anchor.h): per file, before its lines are walked (whose chain it is, where it
// starts) and, for the last file, after (where it ends).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "audit_record.h"
#include "keysvc/audit_anchor.h"
#include "keysvc/audit_verify.h"

namespace keysvc::audit::detail {

// A failure at a line: lines[index], or with `past_end` just after the last line of
// file `file` (what is missing would have been there).
struct Problem {
  std::size_t index = 0;
  bool past_end = false;
  std::size_t file = 0;
  Failure why = Failure::kNone;
  std::string detail;
};

// What the token said about one file.
struct FileAnchor {
  std::size_t from = 0, to = 0;        // the file's lines: [from, to)
  std::optional<std::size_t> segment;  // its last v3 chain_start
  std::optional<ChainId> chain;        // that segment's chain
  std::optional<Anchor> anchor;        // the token's anchor for it (agreeing)
  std::optional<PendingMark> pending;
  bool legacy = false;                 // no v3 chain_start: a log from before anchors
  bool expired = false;                // no anchor, last seal older than the retention
  std::optional<Problem> early;        // reported when the walk reaches early->index
};

// The checks that need only the file's lines: whose chain it is (foreign), where it
// starts (a cut from the front), and for a legacy file verified where a writer now
// anchors a chain (rolled back to a copy from before anchors). One or two trips to the
// token per file.
FileAnchor check_file_start(const std::vector<LogText>& files, const std::vector<Line>& lines, std::size_t file,
                            std::size_t from, std::size_t to, const TokenView& token);

// The checks after the last file's lines were walked up to `walked` (exclusive): the
// seal the anchor names must be among them (else truncated), and the records a pending
// mark names after the last covered line (`covered`, exclusive) must be there (else
// deleted). Sets r.anchored, r.anchor_* and r.pending_marked.
std::optional<Problem> check_file_end(const std::vector<Line>& lines, const FileAnchor& fa, std::size_t walked,
                                      std::size_t covered, VerifyResult& r);

}  // namespace keysvc::audit::detail
