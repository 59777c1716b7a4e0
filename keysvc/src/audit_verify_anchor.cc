#include "audit_verify_anchor.h"

#include <filesystem>

namespace keysvc::audit::detail {

namespace {

std::string describe_slot(const Anchor& a) { return a.writer + " on " + a.host + ", " + a.file; }

std::string seq_text(const Line& l) { return l.rec ? "seq " + std::to_string(l.rec->seq) : "not a record"; }

// The newest seal's ts in lines[from, to) (0 if none).
std::int64_t last_seal_ts(const std::vector<Line>& lines, std::size_t from, std::size_t to) {
  std::int64_t ts = 0;
  for (std::size_t k = from; k < to; ++k)
    if (lines[k].rec && lines[k].rec->event == "seal") ts = std::max(ts, lines[k].rec->ts);
  return ts;
}

std::uint64_t stated_lines(const Record& chain_start, const char* field) {
  auto it = chain_start.obj.find(field);
  if (it == chain_start.obj.end()) return 0;
  return uint_member(*it, "lines").value_or(0);
}

}  // namespace

FileAnchor check_file_start(const std::vector<LogText>& files, const std::vector<Line>& lines, std::size_t file,
                            std::size_t from, std::size_t to, const TokenView& token) {
  FileAnchor fa;
  fa.from = from;
  fa.to = to;
  for (std::size_t k = from; k < to; ++k)
    if (lines[k].rec && lines[k].rec->event == "chain_start")
      if (auto c = chain_of(*lines[k].rec)) {
        fa.segment = k;
        fa.chain = c;
      }
  bool v3_seal = false;
  for (std::size_t k = from; k < to && !v3_seal; ++k)
    v3_seal = lines[k].rec && lines[k].rec->event == "seal" && lines[k].rec->obj.contains("chain");
  fa.legacy = !fa.segment && !v3_seal;
  if (!token.anchors || from == to) return fa;
  auto early = [&](std::size_t index, Failure why, std::string detail) {
    fa.early = Problem{index, false, file, why, std::move(detail)};
    return fa;
  };
  const std::string given = std::filesystem::absolute(files[file].first).lexically_normal().string();
  const std::optional<WriterSlot> here =
      token.host.empty() ? std::nullopt : std::optional<WriterSlot>(WriterSlot{token.host, given});
  if (!fa.segment && v3_seal) return fa;  // this version's seals without their chain_start: the walk says what is missing
  if (!fa.segment) {
    // Verified where a writer now anchors a chain: a copy from before anchors put back.
    if (here)
      if (auto a = token.anchors->load(*here).anchor)
        return early(from, Failure::kTruncated,
                     "the token anchors chain " + to_hex(a->chain) + " for this file (sealed up to seq " +
                         std::to_string(a->seal) + " at " + iso8601_ms(a->sealed_at_ms) +
                         "); this copy has no anchored chain: rolled back to a copy from before anchors, or replaced");
    return fa;
  }
  const Record& cs = *lines[*fa.segment].rec;
  const std::string* host = cs.string_field("host");
  const std::string* path = cs.string_field("file");
  const std::string* writer = cs.string_field("writer");
  if (!host || !path) return early(*fa.segment, Failure::kMalformed, "a chain_start without host or file");
  const WriterSlot slot{*host, *path};
  const std::string whose = (writer ? printable(*writer, 32) : std::string("?")) + " on " + printable(*host, 64) +
                            ", " + printable(*path, 200);
  SlotState st = token.anchors->load(slot);
  fa.pending = st.pending;
  if (!st.anchor) {
    const std::int64_t sealed = last_seal_ts(lines, from, to);
    if (token.retention.count() > 0 && sealed > 0 && token.now_ms - sealed > token.retention.count()) {
      fa.expired = true;
      return fa;
    }
    return early(*fa.segment, Failure::kForeign,
                 "the token has no anchor for chain " + to_hex(*fa.chain) + " (" + whose +
                     "): written with another token, or its anchor was removed");
  }
  if (st.anchor->chain != *fa.chain)
    return early(*fa.segment, Failure::kForeign,
                 "the token anchors chain " + to_hex(st.anchor->chain) + " for " + whose + "; this is chain " +
                     to_hex(*fa.chain));
  if (here && !(here->host == slot.host && here->file == slot.file))
    if (auto a = token.anchors->load(*here).anchor; a && a->chain != *fa.chain)
      return early(from, Failure::kForeign,
                   "the token anchors chain " + to_hex(a->chain) + " (" + describe_slot(*a) +
                       ") for this file here; it holds chain " + to_hex(*fa.chain) + " of " + whose);
  const Anchor& a = *st.anchor;
  std::optional<std::size_t> start;
  for (std::size_t k = from; k < to && !start; ++k)
    if (lines[k].rec && lines[k].rec->event == "chain_start" && lines[k].rec->seq == a.first &&
        chain_of(*lines[k].rec) == fa.chain)
      start = k;
  if (!start)
    return early(from, Failure::kDeleted,
                 "the token's anchor says this file starts at seq " + std::to_string(a.first) +
                     " (chain_start); its first line is " + seq_text(lines[from]) + ": cut from the front");
  const Record& first = *lines[*start].rec;
  const std::uint64_t stated = stated_lines(first, "unanchored") + stated_lines(first, "found");
  const std::uint64_t there = *start - from;
  if (there < stated)
    return early(from, Failure::kDeleted,
                 "the chain_start at line " + std::to_string(lines[*start].number) + " says " +
                     std::to_string(stated) + " line(s) came before it; " + std::to_string(there) +
                     " are there: cut from the front");
  if (there > stated)
    return early(from, Failure::kEdited,
                 std::to_string(there) + " line(s) before the chain_start at line " +
                     std::to_string(lines[*start].number) + ", which says " + std::to_string(stated));
  fa.anchor = st.anchor;
  return fa;
}

std::optional<Problem> check_file_end(const std::vector<Line>& lines, const FileAnchor& fa, std::size_t walked,
                                      std::size_t covered, VerifyResult& r) {
  if (!fa.anchor) return std::nullopt;
  const Anchor& a = *fa.anchor;
  const std::size_t file = fa.from < lines.size() ? lines[fa.from].file : 0;
  std::uint64_t last_seq = 0;
  bool found = a.seal == 0;  // never sealed: nothing to find
  for (std::size_t k = fa.from; k < walked; ++k) {
    if (!lines[k].rec) continue;
    last_seq = lines[k].rec->seq;
    if (lines[k].rec->seq != a.seal) continue;
    if (lines[k].hash != a.seal_hash)
      return Problem{k, false, file, Failure::kTruncated,
                     "the record at seq " + std::to_string(a.seal) +
                         " is not the seal the token's anchor names (sealed " + iso8601_ms(a.sealed_at_ms) +
                         "): rolled back to another copy, or replaced"};
    found = true;
  }
  if (!found)
    return Problem{fa.to > 0 ? fa.to - 1 : 0, true, file, Failure::kTruncated,
                   "the token's anchor names the seal at seq " + std::to_string(a.seal) + " (sealed " +
                       iso8601_ms(a.sealed_at_ms) + "); the file ends at seq " + std::to_string(last_seq) +
                       ": cut after a seal, or rolled back to an older copy"};
  r.anchored = true;
  r.anchor_seal = a.seal;
  r.anchor_sealed_at = a.sealed_at_ms;
  if (!fa.pending) return std::nullopt;
  const std::uint64_t covered_seq = covered > 0 && lines[covered - 1].rec ? lines[covered - 1].rec->seq : 0;
  bool named = false;
  for (const PendingRange& range : fa.pending->ranges) {
    if (range.last_seq <= covered_seq) continue;  // sealed since (a writer died before clearing the mark)
    bool there = false;
    for (std::size_t k = covered; k < walked && !there; ++k) there = lines[k].hash == range.last;
    if (!there)
      return Problem{fa.to > 0 ? fa.to - 1 : 0, true, file, Failure::kDeleted,
                     "the token's pending mark names seq " + std::to_string(range.first_seq) + " to " +
                         std::to_string(range.last_seq) +
                         " (written by a writer without the token); the file does not have them"};
    named = true;
  }
  r.pending_marked = named;
  return std::nullopt;
}

}  // namespace keysvc::audit::detail
