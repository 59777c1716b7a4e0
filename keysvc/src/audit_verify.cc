#include "keysvc/audit_verify.h"

#include <algorithm>
#include <map>
#include <set>

#include "audit_record.h"
#include "audit_verify_anchor.h"

namespace keysvc::audit {

namespace {

using detail::chain_of;
using detail::FileAnchor;
using detail::Line;
using detail::Problem;
using detail::Record;

VerifyResult fail(VerifyResult r, const std::vector<LogText>& files, const Line& at, Failure why, std::string detail) {
  r.ok = false;
  r.reason = why;
  r.first_bad_file = files[at.file].first;
  r.first_bad_line = at.number;
  r.detail = std::move(detail);
  return r;
}

VerifyResult fail(VerifyResult r, const std::vector<LogText>& files, const std::vector<Line>& lines, const Problem& p) {
  r = fail(std::move(r), files, lines[p.index], p.why, p.detail);
  if (p.past_end) r.first_bad_line += 1;
  return r;
}

// What a writer that reopened the file found before the chain_start at lines[at], as a
// failure at the first line it found (or at the chain_start when it found none there).
VerifyResult found_failure(VerifyResult r, const std::vector<LogText>& files, const std::vector<Line>& lines,
                           std::size_t at, std::size_t region) {
  const Record& cs = *lines[at].rec;
  const nlohmann::json& found = cs.obj["found"];
  const std::string writer = "the writer that reopened the file at line " + std::to_string(lines[at].number);
  static const std::set<std::string, std::less<>> kReasons = {"unsealed", "truncated", "deleted", "foreign"};
  if (!found.is_object() || !found.contains("reason") || !found["reason"].is_string() ||
      !kReasons.count(found["reason"].get<std::string>()) || !found.contains("sha256") ||
      !found["sha256"].is_string())
    return fail(r, files, lines[at], Failure::kMalformed, writer + " states an unknown finding");
  const std::string& kind = found["reason"].get_ref<const std::string&>();
  const std::string& sha = found["sha256"].get_ref<const std::string&>();
  const std::size_t n = at - region;
  const Line& where = lines[region];
  if (detail::hash_from_hex(sha) != detail::region_hash(lines, region, at))
    return fail(r, files, where, Failure::kEdited,
                std::to_string(n) + " line(s) that " + writer + " found here changed since");
  auto seqs = [&] {
    auto first = detail::uint_member(found, "first_seq"), last = detail::uint_member(found, "last_seq");
    return first && last && *first ? " (seq " + std::to_string(*first) + " to " + std::to_string(*last) + ")"
                                   : std::string();
  };
  auto expected = [&] { return std::to_string(detail::uint_member(found, "expected_seq").value_or(0)); };
  if (kind == "unsealed")
    return fail(r, files, where, Failure::kUnverifiedTail,
                std::to_string(n) + " line(s)" + seqs() + " that no seal covers; " + writer +
                    " did not seal them (forged, or left by a writer that stopped before sealing)");
  if (kind == "truncated")
    return fail(r, files, where, Failure::kTruncated,
                writer + " found the file without the seal at seq " + expected() +
                    " that the token's anchor named: cut after a seal, or rolled back" +
                    (n ? "; " + std::to_string(n) + " line(s)" + seqs() + " after what it kept" : std::string()));
  if (kind == "deleted")
    return fail(r, files, where, Failure::kDeleted,
                writer + " did not find the records up to seq " + expected() +
                    " that the token's pending mark named (written by a writer without the token)" +
                    (n ? "; " + std::to_string(n) + " other line(s)" + seqs() + " in their place" : std::string()));
  return fail(r, files, where, Failure::kForeign,
              std::to_string(n) + " line(s)" + seqs() + " of another chain than the one the token anchors; " + writer +
                  " did not continue them");
}

// Where each chain_start's "found" lines begin (index -> the chain_start's index); a
// chain_start that names more lines than precede it in its file is a problem at it.
std::map<std::size_t, std::size_t> found_regions(const std::vector<Line>& lines, std::map<std::size_t, Problem>& early) {
  std::map<std::size_t, std::size_t> at;
  std::size_t file_start = 0;
  for (std::size_t j = 0; j < lines.size(); ++j) {
    if (j == 0 || lines[j].file != lines[j - 1].file) file_start = j;
    const Line& l = lines[j];
    if (!l.rec || l.rec->event != "chain_start" || !l.rec->obj.contains("found")) continue;
    const std::uint64_t k = detail::uint_member(l.rec->obj["found"], "lines").value_or(0);
    if (k > j - file_start) {
      early.emplace(j, Problem{j, false, l.file, Failure::kDeleted,
                               "the chain_start says " + std::to_string(k) + " line(s) it found came before it; " +
                                   std::to_string(j - file_start) + " are there"});
      continue;
    }
    at.emplace(j - k, j);
  }
  return at;
}

}  // namespace

std::string_view to_string(Failure f) {
  switch (f) {
    case Failure::kNone: return "ok";
    case Failure::kEdited: return "edited";
    case Failure::kDeleted: return "deleted";
    case Failure::kReordered: return "reordered";
    case Failure::kBadSeal: return "bad_seal";
    case Failure::kUnsealedTail: return "unsealed_tail";
    case Failure::kMalformed: return "malformed";
    case Failure::kTruncated: return "truncated";
    case Failure::kUnverifiedTail: return "unverified_tail";
    case Failure::kForeign: return "foreign";
  }
  return "?";
}

VerifyResult verify(const std::vector<std::string>& files, const TokenView& token) {
  for (int attempt = 1;; ++attempt) {
    std::vector<LogText> texts;
    for (const auto& path : files) {
      std::string error;
      auto text = read_log_file(path, error);
      if (!text) {
        VerifyResult r;
        r.reason = Failure::kMalformed;
        r.first_bad_file = path;
        r.first_bad_line = 1;
        r.detail = "cannot read the file (" + error + ")";
        return r;
      }
      texts.emplace_back(path, std::move(*text));
    }
    VerifyResult r = verify_texts(texts, token);
    // A running writer writes a seal before its anchor names it: one that sealed between
    // the files being read and the anchor being asked for is in the files read again.
    // A real cut stays one.
    if (r.reason != Failure::kTruncated || !token.anchors || attempt == 3) return r;
  }
}

VerifyResult verify_texts(const std::vector<LogText>& files, const TokenView& token) {
  VerifyResult r;
  if (files.empty()) {
    r.reason = Failure::kMalformed;
    r.detail = "no files";
    return r;
  }
  for (const auto& [name, text] : files)
    if (text.empty()) {
      r.reason = Failure::kMalformed;
      r.first_bad_file = name;
      r.first_bad_line = 1;
      r.detail = "empty file";
      return r;
    }
  std::vector<Line> lines = detail::split(files, true);
  const std::size_t n = lines.size();
  std::map<std::size_t, Problem> early;
  const std::map<std::size_t, std::size_t> regions = found_regions(lines, early);
  std::vector<FileAnchor> anchors;
  for (std::size_t f = 0, from = 0; f < files.size(); ++f) {
    std::size_t to = from;
    while (to < n && lines[to].file == f) ++to;
    anchors.push_back(detail::check_file_start(files, lines, f, from, to, token));
    if (anchors.back().early) early.emplace(anchors.back().early->index, *anchors.back().early);
    from = to;
  }
  r.legacy = std::all_of(anchors.begin(), anchors.end(), [](const FileAnchor& a) { return a.legacy; });
  std::optional<std::size_t> last_seal;
  bool incomplete_tail = false;
  std::optional<ChainId> chain;  // the segment's, from its v3 chain_start on
  std::size_t walked = 0;

  for (std::size_t i = 0; i < n; ++i, walked = i) {
    const Line& l = lines[i];
    if (auto e = early.find(i); e != early.end()) return fail(r, files, lines, e->second);
    if (auto g = regions.find(i); g != regions.end()) return found_failure(r, files, lines, g->second, i);
    if (!l.terminated) {
      if (i + 1 == n) {
        incomplete_tail = true;
        break;
      }
      return fail(r, files, l, Failure::kMalformed, "line without newline before the end of the log");
    }
    if (!l.rec) {
      bool changed = i + 1 < n && lines[i + 1].rec && lines[i + 1].rec->prev != l.hash;
      return fail(r, files, l, changed ? Failure::kEdited : Failure::kMalformed,
                  changed ? "not a record, and the next record does not chain to it" : "not an audit record");
    }
    const Record& rec = *l.rec;
    if (i == 0) {
      if (rec.event != "chain_start") {
        bool later = false;
        for (std::size_t j = 1; j < n && lines[j].file == 0 && !later; ++j)
          later = lines[j].rec && lines[j].rec->event == "chain_start";
        return fail(r, files, l, later ? Failure::kReordered : Failure::kDeleted,
                    later ? "chain_start is not the first record" : "the chain_start record is missing");
      }
      r.from_genesis = rec.uint_field("prev_seq") == 0u && rec.seq == 1 && rec.prev == Hash{};
    } else {
      const Line& p = lines[i - 1];
      const std::uint64_t expected = p.rec->seq + 1;
      if (rec.prev != p.hash) {
        if (rec.seq == expected) {
          bool next_breaks = i + 1 < n && lines[i + 1].rec && lines[i + 1].rec->prev != l.hash &&
                             lines[i + 1].rec->seq == rec.seq + 1;
          // The last line: a seal whose head still names its predecessor had its prev edited.
          if (i + 1 == n && rec.event == "seal")
            if (const std::string* head = rec.string_field("head"); head && detail::hash_from_hex(*head) == p.hash)
              next_breaks = true;
          if (next_breaks) return fail(r, files, l, Failure::kEdited, "its prev does not match the record before");
          return fail(r, files, p, Failure::kEdited, "the next record's prev does not match this line's hash");
        }
        if (rec.seq > expected) {
          bool found = false;
          for (std::size_t j = i + 1; j < n && !found; ++j) found = lines[j].rec && lines[j].rec->seq == expected;
          if (found)
            return fail(r, files, l, Failure::kReordered,
                        "seq " + std::to_string(rec.seq) + " where " + std::to_string(expected) + " belongs");
          return fail(r, files, l, Failure::kDeleted,
                      "seq " + std::to_string(expected) +
                          (rec.seq - expected > 1 ? " to " + std::to_string(rec.seq - 1) : std::string()) +
                          " missing");
        }
        return fail(r, files, l, Failure::kReordered,
                    "seq " + std::to_string(rec.seq) + " after seq " + std::to_string(p.rec->seq));
      }
      if (rec.seq != expected)
        return fail(r, files, l, Failure::kEdited,
                    "seq " + std::to_string(rec.seq) + " although it chains to seq " + std::to_string(p.rec->seq));
      // From a v3 chain_start on, writers never let ts go back (audit_log.h).
      const bool v3_start = rec.event == "chain_start" && chain_of(rec);
      if ((chain || v3_start) && rec.ts < p.rec->ts)
        return fail(r, files, l, Failure::kReordered,
                    "its ts " + iso8601_ms(rec.ts) + " is earlier than the record before it (" +
                        iso8601_ms(p.rec->ts) + ")");
    }
    if (rec.event == "chain_start")
      if (auto c = chain_of(rec)) {
        chain = c;
        r.chain = to_hex(*c);
      }
    if (rec.event == "seal") {
      detail::SealCheck sc = detail::check_seal(lines, i, 0, chain, token.hmac);
      if (!sc.ok) return fail(r, files, l, Failure::kBadSeal, sc.detail);
      // A seal right after what it covers covers itself too (nothing else can sit between).
      last_seal = sc.covered + 1 == i ? i : sc.covered;
      r.covered = *last_seal + 1;
      ++r.seals;
      r.last_seal_file = files[l.file].first;
      r.last_seal_line = l.number;
      r.last_seal_seq = rec.seq;
      r.last_seal_ts = rec.ts;
    }
    if (const auto& o = rec.obj; rec.event == "chain_start" && o.contains("unanchored"))
      r.unanchored_lines += detail::uint_member(o["unanchored"], "lines").value_or(0);
    ++r.records;
    r.last_seq = rec.seq;
  }
  if (auto e = early.lower_bound(walked); e != early.end()) return fail(r, files, lines, e->second);
  if (auto p = detail::check_file_end(lines, anchors.back(), walked, r.covered, r)) return fail(r, files, lines, *p);
  if (!token.hmac)
    r.unchecked = "seals not checked (no token)";
  else if (!token.anchors)
    r.unchecked = "anchors not checked";
  else if (anchors.back().expired)
    r.unchecked = "no anchor in the token: its last seal is older than audit.anchor_retention";
  else if (r.legacy)
    r.unchecked = "a log from before anchors: a cut after its last seal or a rollback cannot be seen";
  const std::size_t first_unsealed = r.covered;
  if (first_unsealed < n || incomplete_tail) {
    const Line& at = lines[std::min(first_unsealed, n - 1)];
    r.pending = n - first_unsealed;
    r.incomplete_last_line = incomplete_tail;
    return fail(r, files, at, Failure::kUnsealedTail,
                std::to_string(r.pending) + " line(s) after the last seal" +
                    (incomplete_tail ? " (the last one incomplete)" : "") +
                    (r.pending_marked ? ", written by a writer without the token (the token's pending mark names "
                                        "them; the next writer with the token seals them)"
                                      : ""));
  }
  r.ok = true;
  return r;
}

}  // namespace keysvc::audit
