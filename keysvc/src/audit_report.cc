#include "keysvc/audit_report.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "audit_record.h"

namespace keysvc::audit {

namespace {

using detail::Line;
using detail::Record;

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

void earliest(std::optional<std::int64_t>& field, std::int64_t ts) {
  if (!field || ts < *field) field = ts;
}

// What report needs of one record, taken out of its JSON: the parsed tree (about ten
// times the line's size) is not kept for every record.
struct Entry {
  const Line* line = nullptr;
  std::int64_t ts = 0;
  std::uint64_t seq = 0;
  std::string event;
  std::string name;  // a valid key name, or ""
  std::optional<std::int64_t> encrypt_from, encrypt_until, decrypt_until;  // generation_created
  bool key_not_held = false;  // generation_created: a key whose custody says it was outside the token
  // usage: the period, and the counters of each valid key name in it
  std::optional<std::int64_t> period_start, period_end;
  std::vector<std::pair<std::string, UsageCounters>> counters;
  RecordRef ref() const { return {line->file, line->number, ts}; }
};

// Unix seconds field -> ms (schedules are written in seconds).
std::optional<std::int64_t> seconds_field(const Record& r, std::string_view key) {
  auto s = r.uint_field(key);
  if (!s || *s > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / 1000)) return std::nullopt;
  return static_cast<std::int64_t>(*s) * 1000;
}

std::optional<std::int64_t> time_field(const Record& r, std::string_view key) {
  const std::string* text = r.string_field(key);
  return text ? detail::parse_iso(*text, false) : std::nullopt;
}

UsageCounters counters_of(const nlohmann::json& counters) {
  UsageCounters c{};
  auto take = [&c](const nlohmann::json& obj, std::size_t o) {
    if (auto v = detail::uint_member(obj, outcome_name(static_cast<Outcome>(o)))) c[o] = *v;
  };
  for (std::size_t o = 0; o < kFirstRejection; ++o) take(counters, o);
  if (auto rej = counters.find("rejected"); rej != counters.end() && rej->is_object())
    for (std::size_t o = kFirstRejection; o < kOutcomeCount; ++o) take(*rej, o);
  return c;
}

Entry entry_of(const Line& line, const Record& rec) {
  Entry e;
  e.line = &line;
  e.ts = rec.ts;
  e.seq = rec.seq;
  e.event = rec.event;
  if (const std::string* n = rec.string_field("name"); n && is_name(*n)) e.name = *n;
  if (rec.event == "generation_created") {
    e.encrypt_from = seconds_field(rec, "encrypt_from");
    e.encrypt_until = seconds_field(rec, "encrypt_until");
    e.decrypt_until = seconds_field(rec, "decrypt_until");
    for (const char* key : {"enc_key", "mac_key"})
      if (auto k = rec.obj.find(key); k != rec.obj.end() && k->is_object())
        if (auto held = k->find("held_in_token"); held != k->end() && held->is_boolean() && !held->get<bool>())
          e.key_not_held = true;
  } else if (rec.event == "usage") {
    e.period_start = time_field(rec, "period_start");
    e.period_end = time_field(rec, "period_end");
    if (auto ks = rec.obj.find("keys"); ks != rec.obj.end() && ks->is_object())
      for (const auto& [name, counters] : ks->items())
        if (is_name(name) && counters.is_object()) e.counters.emplace_back(name, counters_of(counters));
  }
  return e;
}

// What the whole of the files says about each generation's lifecycle, for the anomaly
// rules: when it was first revoked, and when it started and stopped encrypting.
class Lifecycles {
 public:
  explicit Lifecycles(const std::vector<Entry>& records) {
    std::map<std::string, std::int64_t> encrypt_from;
    std::vector<const Entry*> activations;
    for (const Entry& r : records) {
      if (r.name.empty()) continue;
      if (r.event == "revoked") {
        auto [it, fresh] = revoked_.try_emplace(r.name, r.ts);
        if (!fresh) it->second = std::min(it->second, r.ts);
      } else if (r.event == "generation_created") {
        if (r.encrypt_from) encrypt_from[r.name] = *r.encrypt_from;
      } else if (r.event == "activated") {
        activations.push_back(&r);
        switches_[r.name].push_back({r.ts, true});
      } else if (r.event == "decrypt_only") {
        switches_[r.name].push_back({r.ts, false});
      }
    }
    // A generation activated with a later encrypt_from than another's ends the other's
    // encrypt window.
    for (const Entry* a : activations) {
      auto later = encrypt_from.find(a->name);
      if (later == encrypt_from.end()) continue;
      for (const auto& [name, from] : encrypt_from)
        if (name != a->name && from < later->second) switches_[name].push_back({a->ts, false});
    }
    for (auto& [name, s] : switches_)
      std::stable_sort(s.begin(), s.end(), [](const Switch& a, const Switch& b) { return a.at < b.at; });
  }

  // Whether `name` had a revoked record before `t`.
  bool revoked_before(const std::string& name, std::int64_t t) const {
    auto it = revoked_.find(name);
    return it != revoked_.end() && it->second < t;
  }
  // Whether `name` had stopped encrypting before `t` (and not started again).
  bool decrypt_only_before(const std::string& name, std::int64_t t) const {
    auto it = switches_.find(name);
    if (it == switches_.end()) return false;
    std::optional<bool> encrypting;
    for (const Switch& s : it->second) {
      if (s.at >= t) break;
      encrypting = s.encrypting;
    }
    return encrypting == false;
  }

 private:
  struct Switch {
    std::int64_t at;
    bool encrypting;
  };
  std::map<std::string, std::int64_t> revoked_;
  std::map<std::string, std::vector<Switch>> switches_;
};

class Builder {
 public:
  Builder(const std::vector<LogText>& files, const ReportOptions& options) : files_(files), options_(options) {
    for (const auto& f : files) rep_.files.push_back({f.first, {}, 0, {}, {}});
  }

  void add(const Entry& r, const Lifecycles& life) {
    ++rep_.records;
    if (rep_.events.size() < 64 || rep_.events.count(r.event)) ++rep_.events[r.event.substr(0, 64)];
    FileSummary& f = rep_.files[r.line->file];
    ++f.records;
    if (!f.first) f.first = r.ts;
    f.last = r.ts;
    if (!r.name.empty()) lifecycle(r);
    if (r.event == "seal") rep_.seals.push_back({r.seq, r.ref()});
    if (r.event == "usage") usage(r, life);
  }

  Report finish() {
    for (auto& [name, k] : keys_) rep_.keys.push_back(std::move(k));
    return std::move(rep_);
  }

 private:
  KeyReport& key(const std::string& name) {
    KeyReport& k = keys_[name];
    k.name = name;
    return k;
  }

  void lifecycle(const Entry& r) {
    KeyReport& k = key(r.name);
    seen(k, r.ts);
    const std::string& e = r.event;
    if (e == "generation_refused") {
      k.marks.push_back({e, r.ref()});
      anomaly("generation_refused", r.name, 1, r);
      return;
    }
    std::optional<std::int64_t>* field = e == "generation_created" ? &k.created
                                         : e == "activated"        ? &k.activated
                                         : e == "decrypt_only"     ? &k.decrypt_only
                                         : e == "revoked"          ? &k.revoked
                                         : e == "destroyed"        ? &k.destroyed
                                                                   : nullptr;
    if (!field) return;
    earliest(*field, r.ts);
    k.marks.push_back({e, r.ref()});
    if (e == "generation_created") {
      if (r.key_not_held) anomaly("key_not_held_in_token", r.name, 1, r);
      k.encrypt_from = r.encrypt_from;
      k.encrypt_until = r.encrypt_until;
      k.decrypt_until = r.decrypt_until;
    }
  }

  void anomaly(const std::string& kind, const std::string& name, std::uint64_t count, const Entry& r) {
    auto [it, fresh] = index_.try_emplace({kind, name}, rep_.anomalies.size());
    if (fresh) {
      rep_.anomalies.push_back(
          {kind, name, r.ts, count, files_[r.line->file].first, r.line->number, r.line->file, r.ts});
      return;
    }
    Anomaly& a = rep_.anomalies[it->second];
    a.count = sat_add(a.count, count);
    a.last_at = std::max(a.last_at, r.ts);
  }

  void usage(const Entry& r, const Lifecycles& life) {
    UsagePeriod period;
    period.where = r.ref();
    period.start = r.period_start.value_or(r.ts);
    period.end = r.period_end.value_or(r.ts);
    std::uint64_t mac_failures = 0;
    for (const auto& [name, c] : r.counters) {
      KeyReport& k = key(name);
      seen(k, r.ts);
      for (std::size_t o = 0; o < kOutcomeCount; ++o) {
        k.totals[o] = sat_add(k.totals[o], c[o]);
        period.totals[o] = sat_add(period.totals[o], c[o]);
      }
      const UsageCounters& counts = c;
      auto at = [&counts](Outcome o) { return counts[static_cast<std::size_t>(o)]; };
      mac_failures = sat_add(mac_failures, at(Outcome::kMacFailure));
      if (at(Outcome::kUnknownKey)) anomaly("unknown_key_name", name, at(Outcome::kUnknownKey), r);
      if (at(Outcome::kRevoked)) anomaly("ticket_under_revoked_key", name, at(Outcome::kRevoked), r);
      if (!r.period_start) continue;  // the lifecycle rules need the period's start
      const std::uint64_t used = sat_add(at(Outcome::kIssued), at(Outcome::kResumed));  // renewed: of resumed
      if (used && life.revoked_before(name, period.start))
        anomaly("used_after_revocation", name, used, r);
      else if (at(Outcome::kIssued) && life.decrypt_only_before(name, period.start))
        anomaly("issued_after_decrypt_only", name, at(Outcome::kIssued), r);
    }
    if (options_.mac_failure_spike && mac_failures >= options_.mac_failure_spike)
      rep_.anomalies.push_back({"mac_failure_spike", "", r.ts, mac_failures, files_[r.line->file].first,
                                r.line->number, r.line->file, r.ts});
    rep_.usage.push_back(period);
  }

  const std::vector<LogText>& files_;
  const ReportOptions& options_;
  Report rep_;
  std::map<std::string, KeyReport> keys_;
  std::map<std::pair<std::string, std::string>, std::size_t> index_;  // (kind, name) -> anomaly
};

}  // namespace

std::uint64_t KeyReport::rejected() const {
  std::uint64_t n = 0;
  for (std::size_t k = kFirstRejection; k < kOutcomeCount; ++k) n = sat_add(n, totals[k]);
  return n;
}

Report report(const std::vector<std::string>& files, const ReportOptions& options) {
  std::vector<LogText> texts;
  std::vector<std::string> errors;
  for (const auto& path : files) {
    std::string error;
    texts.emplace_back(path, read_log_file(path, error).value_or(std::string()));
    errors.push_back(error);
  }
  Report rep = report_texts(texts, options);
  for (std::size_t f = 0; f < errors.size(); ++f) rep.files[f].error = errors[f];
  return rep;
}

Report report_texts(const std::vector<LogText>& files, const ReportOptions& options) {
  const std::vector<Line> lines = detail::split(files, false);
  std::vector<Entry> records;
  std::uint64_t unreadable = 0;
  for (const Line& l : lines) {
    if (auto rec = detail::parse_record(l.raw)) records.push_back(entry_of(l, *rec));
    else ++unreadable;
  }
  const Lifecycles life(records);
  Builder b(files, options);
  for (const Entry& r : records) {
    if ((options.since && r.ts < *options.since) || (options.until && r.ts >= *options.until)) continue;
    b.add(r, life);
  }
  Report rep = b.finish();
  rep.unreadable = unreadable;
  return rep;
}

}  // namespace keysvc::audit
