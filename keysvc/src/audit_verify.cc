#include "keysvc/audit_verify.h"

#include <algorithm>

#include "audit_record.h"

namespace keysvc::audit {

namespace {

using detail::hash_from_hex;
using detail::Line;
using detail::Record;

VerifyResult fail(VerifyResult r, const std::vector<LogText>& files, const Line& at, Failure why, std::string detail) {
  r.ok = false;
  r.reason = why;
  r.first_bad_file = files[at.file].first;
  r.first_bad_line = at.number;
  r.detail = std::move(detail);
  return r;
}

// At most `max` bytes of `s`, control and non-ASCII bytes as '?': a field from the file
// quoted in a one-line detail.
std::string printable(std::string_view s, std::size_t max) {
  std::string out(s.substr(0, max));
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  return out;
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
  }
  return "?";
}

VerifyResult verify(const std::vector<std::string>& files, const KeyedHmac& hmac) {
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
  return verify_texts(texts, hmac);
}

VerifyResult verify_texts(const std::vector<LogText>& files, const KeyedHmac& hmac) {
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
  std::optional<std::size_t> last_seal;
  bool incomplete_tail = false;

  for (std::size_t i = 0; i < n; ++i) {
    const Line& l = lines[i];
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
            if (const std::string* head = rec.string_field("head"); head && hash_from_hex(*head) == p.hash)
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
    }
    if (rec.event == "seal") {
      const std::string* head = rec.string_field("head");
      const std::string* mac = rec.string_field("mac");
      const std::string* key = rec.string_field("key");
      auto head_hash = head ? hash_from_hex(*head) : std::nullopt;
      auto mac_value = mac ? hash_from_hex(*mac) : std::nullopt;
      if (!head_hash || !mac_value || !key) return fail(r, files, l, Failure::kBadSeal, "seal without head, mac or key");
      // v2 seals name the record they cover ("sealed"), which records appended while the
      // token computed the MAC may separate from the seal; v1 seals cover their prev.
      const bool v2 = rec.obj.contains("sealed");
      const std::optional<std::uint64_t> sealed = rec.uint_field("sealed");
      if (v2 && !sealed) return fail(r, files, l, Failure::kBadSeal, "the seal's sealed is not a seq");
      const std::uint64_t covered_seq = v2 ? *sealed : rec.seq - 1;
      std::optional<std::size_t> covered;
      for (std::size_t j = i; j-- > 0 && lines[j].rec && lines[j].rec->seq >= covered_seq;)
        if (lines[j].rec->seq == covered_seq) covered = j;
      if (!covered || lines[*covered].hash != *head_hash)
        return fail(r, files, l, Failure::kBadSeal,
                    v2 ? "the seal's head is not the hash of the record it names" : "the seal's head is not its prev");
      auto expected_mac = hmac(*key, v2 ? seal_message_v2(covered_seq, *head_hash) : seal_message(rec.seq, *head_hash));
      if (!expected_mac)
        return fail(r, files, l, Failure::kBadSeal, "the token has no audit key " + printable(*key, 64));
      if (*expected_mac != *mac_value) return fail(r, files, l, Failure::kBadSeal, "the seal's MAC does not verify");
      // A seal right after what it covers covers itself too (nothing else can sit between).
      last_seal = *covered + 1 == i ? i : *covered;
      ++r.seals;
      r.last_seal_file = files[l.file].first;
      r.last_seal_line = l.number;
      r.last_seal_seq = rec.seq;
      r.last_seal_ts = rec.ts;
    }
    ++r.records;
    r.last_seq = rec.seq;
  }
  const std::size_t first_unsealed = last_seal ? *last_seal + 1 : 0;
  if (first_unsealed < n || incomplete_tail) {
    const Line& at = lines[std::min(first_unsealed, n - 1)];
    r.pending = n - first_unsealed;
    r.incomplete_last_line = incomplete_tail;
    return fail(r, files, at, Failure::kUnsealedTail,
                std::to_string(r.pending) + " line(s) after the last seal" +
                    (incomplete_tail ? " (the last one incomplete)" : ""));
  }
  r.ok = true;
  return r;
}

}  // namespace keysvc::audit
