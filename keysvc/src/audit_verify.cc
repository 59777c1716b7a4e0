#include "keysvc/audit_verify.h"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <limits>
#include <sstream>

namespace keysvc::audit {

namespace {

// ---------------------------------------------------------------- a bounded JSON reader

struct Member;
struct Value {
  enum Type { kNull, kBool, kInt, kString, kArray, kObject } type = kNull;
  bool b = false;
  std::int64_t i = 0;
  bool is_uint = false;  // non-negative integer that fits in uint64
  std::uint64_t u = 0;
  std::string s;
  std::vector<Value> array;
  std::vector<Member> object;  // not std::pair<std::string, Value>: clang needs Value complete for pair

  const Value* get(std::string_view key) const;
};
struct Member {
  std::string key;
  Value value;
};

const Value* Value::get(std::string_view key) const {
  if (type != kObject) return nullptr;
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : t_(text) {}
  bool parse(Value& out) {
    if (!value(out, 0)) return false;
    ws();
    return p_ == t_.size();
  }

 private:
  static constexpr int kMaxDepth = 8;
  void ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t')) ++p_;
  }
  bool lit(std::string_view w) {
    if (t_.substr(p_, w.size()) != w) return false;
    p_ += w.size();
    return true;
  }
  bool value(Value& v, int depth) {
    if (depth > kMaxDepth) return false;
    ws();
    if (p_ >= t_.size()) return false;
    char c = t_[p_];
    if (c == '{') return object(v, depth);
    if (c == '[') return array(v, depth);
    if (c == '"') {
      v.type = Value::kString;
      return string(v.s);
    }
    if (c == 't') { v.type = Value::kBool; v.b = true; return lit("true"); }
    if (c == 'f') { v.type = Value::kBool; v.b = false; return lit("false"); }
    if (c == 'n') { v.type = Value::kNull; return lit("null"); }
    return number(v);
  }
  bool number(Value& v) {
    bool neg = false;
    if (p_ < t_.size() && t_[p_] == '-') { neg = true; ++p_; }
    std::size_t start = p_;
    std::uint64_t u = 0;
    while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') {
      auto d = static_cast<std::uint64_t>(t_[p_] - '0');
      if (u > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return false;
      u = u * 10 + d;
      ++p_;
    }
    if (p_ == start || p_ - start > 20) return false;
    if (p_ - start > 1 && t_[start] == '0') return false;
    v.type = Value::kInt;
    if (neg) {
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return false;
      v.i = -static_cast<std::int64_t>(u);
    } else {
      v.is_uint = true;
      v.u = u;
      v.i = u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                ? std::numeric_limits<std::int64_t>::max()
                : static_cast<std::int64_t>(u);
    }
    return true;
  }
  bool string(std::string& out) {
    if (!lit("\"")) return false;
    while (p_ < t_.size()) {
      unsigned char c = static_cast<unsigned char>(t_[p_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        continue;
      }
      if (p_ >= t_.size()) return false;
      char e = t_[p_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          if (p_ + 4 > t_.size()) return false;
          unsigned cp = 0;
          for (int k = 0; k < 4; ++k) {
            char h = t_[p_++];
            int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (d < 0) return false;
            cp = cp * 16 + static_cast<unsigned>(d);
          }
          // AuditLog writes \u00XX for single bytes; other code points are kept as '?'.
          out.push_back(cp < 0x100 ? static_cast<char>(cp) : '?');
          break;
        }
        default: return false;
      }
    }
    return false;
  }
  bool array(Value& v, int depth) {
    v.type = Value::kArray;
    ++p_;
    ws();
    if (lit("]")) return true;
    for (;;) {
      Value e;
      if (!value(e, depth + 1)) return false;
      v.array.push_back(std::move(e));
      ws();
      if (lit("]")) return true;
      if (!lit(",")) return false;
    }
  }
  bool object(Value& v, int depth) {
    v.type = Value::kObject;
    ++p_;
    ws();
    if (lit("}")) return true;
    for (;;) {
      ws();
      std::string key;
      if (!string(key)) return false;
      ws();
      if (!lit(":")) return false;
      Value e;
      if (!value(e, depth + 1)) return false;
      v.object.push_back(Member{std::move(key), std::move(e)});
      ws();
      if (lit("}")) return true;
      if (!lit(",")) return false;
    }
  }

  std::string_view t_;
  std::size_t p_ = 0;
};

std::optional<Hash> hash_from_hex(std::string_view h) {
  if (h.size() != 64) return std::nullopt;
  Hash out{};
  for (std::size_t k = 0; k < 64; ++k) {
    char c = h[k];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;  // lowercase only
    if (d < 0) return std::nullopt;
    out[k / 2] = static_cast<std::uint8_t>(k % 2 ? (out[k / 2] | d) : d << 4);
  }
  return out;
}

// ---------------------------------------------------------------- records

struct Record {
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
  std::string event;
  Hash prev{};
  Value obj;
};

std::optional<std::int64_t> parse_ts(std::string_view s);

std::optional<Record> parse_record(std::string_view line) {
  if (line.size() > (1u << 20)) return std::nullopt;
  Value v;
  if (!Parser(line).parse(v) || v.type != Value::kObject) return std::nullopt;
  const Value* seq = v.get("seq");
  const Value* ts = v.get("ts");
  const Value* event = v.get("event");
  const Value* prev = v.get("prev");
  if (!seq || !seq->is_uint || seq->u == 0 || !ts || ts->type != Value::kString || !event ||
      event->type != Value::kString || !prev || prev->type != Value::kString)
    return std::nullopt;
  auto t = parse_ts(ts->s);
  auto p = hash_from_hex(prev->s);
  if (!t || !p) return std::nullopt;
  Record r;
  r.seq = seq->u;
  r.ts = *t;
  r.event = event->s;
  r.prev = *p;
  r.obj = std::move(v);
  return r;
}

struct Line {
  std::size_t file = 0;
  std::size_t number = 0;  // 1-based
  std::string_view raw;
  bool terminated = true;
  Hash hash{};
  std::optional<Record> rec;
};

std::vector<Line> split(const std::vector<LogText>& files, bool parse_all) {
  std::vector<Line> lines;
  for (std::size_t f = 0; f < files.size(); ++f) {
    std::string_view text = files[f].second;
    std::size_t start = 0, number = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      Line l;
      l.file = f;
      l.number = ++number;
      l.terminated = end != std::string_view::npos;
      l.raw = text.substr(start, l.terminated ? end - start : std::string_view::npos);
      if (parse_all) {
        l.hash = sha256(l.raw);
        l.rec = parse_record(l.raw);
      }
      const bool terminated = l.terminated;
      lines.push_back(std::move(l));
      if (!terminated) break;
      start = end + 1;
    }
  }
  return lines;
}

std::vector<LogText> read_files(const std::vector<std::string>& paths, std::vector<bool>* unreadable) {
  std::vector<LogText> texts;
  for (const auto& p : paths) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    if (in) ss << in.rdbuf();
    if (unreadable) unreadable->push_back(!in);
    texts.emplace_back(p, ss.str());
  }
  return texts;
}

std::optional<std::int64_t> days_from_civil(int y, unsigned m, unsigned d) {
  if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = static_cast<int>(m) - 1;
  tm.tm_mday = static_cast<int>(d);
  std::time_t t = ::timegm(&tm);
  if (tm.tm_mday != static_cast<int>(d)) return std::nullopt;  // e.g. 02-31
  return static_cast<std::int64_t>(t) / 86400;
}

// Fixed-width digits at s[pos, pos+n).
std::optional<int> digits(std::string_view s, std::size_t pos, std::size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (std::size_t k = pos; k < pos + n; ++k) {
    if (s[k] < '0' || s[k] > '9') return std::nullopt;
    v = v * 10 + (s[k] - '0');
  }
  return v;
}

// "YYYY-MM-DD" ["T" "HH:MM:SS" ["." mmm] "Z"]
std::optional<std::int64_t> parse_iso(std::string_view s, bool date_alone_ok) {
  auto y = digits(s, 0, 4), mo = digits(s, 5, 2), d = digits(s, 8, 2);
  if (!y || !mo || !d || s[4] != '-' || s[7] != '-') return std::nullopt;
  auto days = days_from_civil(*y, static_cast<unsigned>(*mo), static_cast<unsigned>(*d));
  if (!days) return std::nullopt;
  std::int64_t ms = *days * 86400000;
  if (s.size() == 10) return date_alone_ok ? std::optional<std::int64_t>(ms) : std::nullopt;
  auto h = digits(s, 11, 2), mi = digits(s, 14, 2), se = digits(s, 17, 2);
  if (s.size() < 20 || s[10] != 'T' || !h || !mi || !se || s[13] != ':' || s[16] != ':' || *h > 23 || *mi > 59 ||
      *se > 60)
    return std::nullopt;
  ms += ((*h * 60 + *mi) * 60 + *se) * std::int64_t{1000};
  std::size_t p = 19;
  if (s[p] == '.') {
    auto frac = digits(s, 20, 3);
    if (!frac) return std::nullopt;
    ms += *frac;
    p = 23;
  }
  if (p + 1 != s.size() || s[p] != 'Z') return std::nullopt;
  return ms;
}

std::optional<std::int64_t> parse_ts(std::string_view s) { return parse_iso(s, false); }

VerifyResult fail(VerifyResult r, const std::vector<LogText>& files, const Line& at, Failure why, std::string detail) {
  r.ok = false;
  r.reason = why;
  r.first_bad_file = files[at.file].first;
  r.first_bad_line = at.number;
  r.detail = std::move(detail);
  return r;
}

const std::string* string_field(const Record& r, std::string_view key) {
  const Value* v = r.obj.get(key);
  return v && v->type == Value::kString ? &v->s : nullptr;
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

std::optional<std::int64_t> parse_time(std::string_view text) {
  if (text.empty() || text.size() > 40) return std::nullopt;
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (text.size() > 12) return std::nullopt;
    std::int64_t s = 0;
    for (char c : text) s = s * 10 + (c - '0');
    return s * 1000;
  }
  return parse_iso(text, true);
}

VerifyResult verify(const std::vector<std::string>& files, const KeyedHmac& hmac) {
  std::vector<bool> unreadable;
  std::vector<LogText> texts = read_files(files, &unreadable);
  for (std::size_t f = 0; f < files.size(); ++f)
    if (unreadable[f]) {
      VerifyResult r;
      r.reason = Failure::kMalformed;
      r.first_bad_file = files[f];
      r.first_bad_line = 1;
      r.detail = "cannot read the file";
      return r;
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
  std::vector<Line> lines = split(files, true);
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
      const Value* prev_seq = rec.obj.get("prev_seq");
      r.from_genesis = prev_seq && prev_seq->is_uint && prev_seq->u == 0 && rec.seq == 1 && rec.prev == Hash{};
    } else {
      const Line& p = lines[i - 1];
      const std::uint64_t expected = p.rec->seq + 1;
      if (rec.prev != p.hash) {
        if (rec.seq == expected) {
          bool next_breaks = i + 1 < n && lines[i + 1].rec && lines[i + 1].rec->prev != l.hash &&
                             lines[i + 1].rec->seq == rec.seq + 1;
          // The last line: a seal whose head still names its predecessor had its prev edited.
          if (i + 1 == n && rec.event == "seal")
            if (const std::string* head = string_field(rec, "head"); head && hash_from_hex(*head) == p.hash)
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
      const std::string* head = string_field(rec, "head");
      const std::string* mac = string_field(rec, "mac");
      const std::string* key = string_field(rec, "key");
      auto head_hash = head ? hash_from_hex(*head) : std::nullopt;
      auto mac_value = mac ? hash_from_hex(*mac) : std::nullopt;
      if (!head_hash || !mac_value || !key) return fail(r, files, l, Failure::kBadSeal, "seal without head, mac or key");
      // v2 seals name the record they cover ("sealed"), which records appended while the
      // token computed the MAC may separate from the seal; v1 seals cover their prev.
      const Value* sealed = rec.obj.get("sealed");
      if (sealed && !sealed->is_uint) return fail(r, files, l, Failure::kBadSeal, "the seal's sealed is not a seq");
      const std::uint64_t covered_seq = sealed ? sealed->u : rec.seq - 1;
      std::optional<std::size_t> covered;
      for (std::size_t j = i; j-- > 0 && lines[j].rec && lines[j].rec->seq >= covered_seq;)
        if (lines[j].rec->seq == covered_seq) covered = j;
      if (!covered || lines[*covered].hash != *head_hash)
        return fail(r, files, l, Failure::kBadSeal,
                    sealed ? "the seal's head is not the hash of the record it names" : "the seal's head is not its prev");
      auto expected_mac = hmac(*key, sealed ? seal_message_v2(covered_seq, *head_hash) : seal_message(rec.seq, *head_hash));
      if (!expected_mac)
        return fail(r, files, l, Failure::kBadSeal, "the token has no audit key " + key->substr(0, 64));
      if (*expected_mac != *mac_value) return fail(r, files, l, Failure::kBadSeal, "the seal's MAC does not verify");
      // A seal right after what it covers covers itself too (nothing else can sit between).
      last_seal = *covered + 1 == i ? i : *covered;
      ++r.seals;
    }
    ++r.records;
    r.last_seq = rec.seq;
  }
  const std::size_t first_unsealed = last_seal ? *last_seal + 1 : 0;
  if (first_unsealed < n || incomplete_tail) {
    const Line& at = lines[std::min(first_unsealed, n - 1)];
    std::size_t tail = n - first_unsealed;
    return fail(r, files, at, Failure::kUnsealedTail,
                std::to_string(tail) + " line(s) after the last seal" +
                    (incomplete_tail ? " (the last one incomplete)" : ""));
  }
  r.ok = true;
  return r;
}

// ---------------------------------------------------------------- report

std::uint64_t KeyReport::rejected() const {
  std::uint64_t n = 0;
  for (std::size_t k = kFirstRejection; k < kOutcomeCount; ++k) n += totals[k];
  return n;
}

Report report(const std::vector<std::string>& files, const ReportOptions& options) {
  return report_texts(read_files(files, nullptr), options);
}

namespace {

std::uint64_t sat_add(std::uint64_t a, std::uint64_t b) {
  return a > std::numeric_limits<std::uint64_t>::max() - b ? std::numeric_limits<std::uint64_t>::max() : a + b;
}

bool is_name(std::string_view s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

void seen(KeyReport& k, std::int64_t ts) {
  if (!k.first_seen || ts < *k.first_seen) k.first_seen = ts;
  if (!k.last_seen || ts > *k.last_seen) k.last_seen = ts;
}

}  // namespace

Report report_texts(const std::vector<LogText>& files, const ReportOptions& options) {
  Report rep;
  std::map<std::string, KeyReport> keys;
  std::map<std::pair<std::string, std::string>, std::size_t> anomaly_index;  // (kind, name) -> index
  auto anomaly = [&](const std::string& kind, const std::string& name, std::int64_t at, std::uint64_t count,
                     const Line& l) {
    auto [it, fresh] = anomaly_index.try_emplace({kind, name}, rep.anomalies.size());
    if (fresh) rep.anomalies.push_back({kind, name, at, count, files[l.file].first, l.number});
    else rep.anomalies[it->second].count = sat_add(rep.anomalies[it->second].count, count);
  };
  for (Line& l : split(files, false)) {
    auto rec = parse_record(l.raw);
    if (!rec) {
      ++rep.unreadable;
      continue;
    }
    if ((options.since && rec->ts < *options.since) || (options.until && rec->ts >= *options.until)) continue;
    ++rep.records;
    if (rep.events.size() < 64 || rep.events.count(rec->event)) ++rep.events[rec->event.substr(0, 64)];
    const std::string* name = string_field(*rec, "name");
    if (name && is_name(*name)) {
      KeyReport& k = keys[*name];
      k.name = *name;
      seen(k, rec->ts);
      const std::string& e = rec->event;
      if (e == "generation_created") k.created = rec->ts;
      else if (e == "activated") k.activated = rec->ts;
      else if (e == "decrypt_only") k.decrypt_only = rec->ts;
      else if (e == "revoked") k.revoked = rec->ts;
      else if (e == "destroyed") k.destroyed = rec->ts;
    }
    if (rec->event != "usage") continue;
    const Value* ks = rec->obj.get("keys");
    if (!ks || ks->type != Value::kObject) continue;
    std::uint64_t mac_failures = 0;
    for (const auto& [key_name, counters] : ks->object) {
      if (!is_name(key_name) || counters.type != Value::kObject) continue;
      KeyReport& k = keys[key_name];
      k.name = key_name;
      seen(k, rec->ts);
      UsageCounters c{};
      auto take = [&](const Value& obj, Outcome o) {
        const Value* v = obj.get(outcome_name(o));
        if (v && v->is_uint) c[static_cast<std::size_t>(o)] = v->u;
      };
      take(counters, Outcome::kIssued);
      take(counters, Outcome::kResumed);
      take(counters, Outcome::kRenewed);
      if (const Value* rej = counters.get("rejected"); rej && rej->type == Value::kObject)
        for (std::size_t o = kFirstRejection; o < kOutcomeCount; ++o) take(*rej, static_cast<Outcome>(o));
      for (std::size_t o = 0; o < kOutcomeCount; ++o) k.totals[o] = sat_add(k.totals[o], c[o]);
      auto at = [&](Outcome o) { return c[static_cast<std::size_t>(o)]; };
      mac_failures = sat_add(mac_failures, at(Outcome::kMacFailure));
      if (at(Outcome::kUnknownKey)) anomaly("unknown_key_name", key_name, rec->ts, at(Outcome::kUnknownKey), l);
      if (at(Outcome::kRevoked)) anomaly("ticket_under_revoked_key", key_name, rec->ts, at(Outcome::kRevoked), l);
      std::uint64_t used = sat_add(sat_add(at(Outcome::kIssued), at(Outcome::kResumed)), at(Outcome::kRenewed));
      if (used && k.revoked && *k.revoked < rec->ts) anomaly("used_after_revocation", key_name, rec->ts, used, l);
    }
    if (options.mac_failure_spike && mac_failures >= options.mac_failure_spike)
      rep.anomalies.push_back({"mac_failure_spike", "", rec->ts, mac_failures, files[l.file].first, l.number});
  }
  for (auto& [name, k] : keys) rep.keys.push_back(std::move(k));
  return rep;
}

}  // namespace keysvc::audit
