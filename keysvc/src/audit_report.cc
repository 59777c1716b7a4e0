#include "keysvc/audit_report.h"

#include <algorithm>
#include <limits>
#include <set>
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

struct Parsed {
  const Line* line;
  Record rec;
  RecordRef ref() const { return {line->file, line->number, rec.ts}; }
};

const std::string* name_of(const Record& r) {
  const std::string* n = r.string_field("name");
  return n && is_name(*n) ? n : nullptr;
}

// Unix seconds field -> ms (schedules are written in seconds).
std::optional<std::int64_t> seconds_field(const Record& r, std::string_view key) {
  auto s = r.uint_field(key);
  if (!s || *s > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / 1000)) return std::nullopt;
  return static_cast<std::int64_t>(*s) * 1000;
}

// What the whole of the files says about each generation's lifecycle, for the anomaly
// rules: when it was first revoked, and when it started and stopped encrypting.
class Lifecycles {
 public:
  explicit Lifecycles(const std::vector<Parsed>& records) {
    std::map<std::string, std::int64_t> encrypt_from;
    std::vector<std::pair<const Parsed*, const std::string*>> activations;
    for (const Parsed& p : records) {
      const std::string* name = name_of(p.rec);
      if (!name) continue;
      const std::string& e = p.rec.event;
      if (e == "revoked") {
        auto [it, fresh] = revoked_.try_emplace(*name, p.rec.ts);
        if (!fresh) it->second = std::min(it->second, p.rec.ts);
      } else if (e == "generation_created") {
        if (auto from = seconds_field(p.rec, "encrypt_from")) encrypt_from[*name] = *from;
      } else if (e == "activated") {
        activations.emplace_back(&p, name);
        switches_[*name].push_back({p.rec.ts, true});
      } else if (e == "decrypt_only") {
        switches_[*name].push_back({p.rec.ts, false});
      }
    }
    // A generation activated with a later encrypt_from than another's ends the other's
    // encrypt window.
    for (const auto& [p, activated] : activations) {
      auto later = encrypt_from.find(*activated);
      if (later == encrypt_from.end()) continue;
      for (const auto& [name, from] : encrypt_from)
        if (name != *activated && from < later->second) switches_[name].push_back({p->rec.ts, false});
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

  void add(const Parsed& p, const Lifecycles& life) {
    const Record& rec = p.rec;
    ++rep_.records;
    if (rep_.events.size() < 64 || rep_.events.count(rec.event)) ++rep_.events[rec.event.substr(0, 64)];
    FileSummary& f = rep_.files[p.line->file];
    ++f.records;
    if (!f.first) f.first = rec.ts;
    f.last = rec.ts;
    if (const std::string* name = name_of(rec)) lifecycle(p, *name);
    if (rec.event == "seal") rep_.seals.push_back({rec.seq, p.ref()});
    if (rec.event == "usage") usage(p, life);
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

  void lifecycle(const Parsed& p, const std::string& name) {
    KeyReport& k = key(name);
    seen(k, p.rec.ts);
    const std::string& e = p.rec.event;
    std::optional<std::int64_t>* field = e == "generation_created" ? &k.created
                                         : e == "activated"        ? &k.activated
                                         : e == "decrypt_only"     ? &k.decrypt_only
                                         : e == "revoked"          ? &k.revoked
                                         : e == "destroyed"        ? &k.destroyed
                                                                   : nullptr;
    if (!field) return;
    earliest(*field, p.rec.ts);
    k.marks.push_back({e, p.ref()});
    if (e == "generation_created") {
      k.encrypt_from = seconds_field(p.rec, "encrypt_from");
      k.encrypt_until = seconds_field(p.rec, "encrypt_until");
      k.decrypt_until = seconds_field(p.rec, "decrypt_until");
    }
  }

  void anomaly(const std::string& kind, const std::string& name, std::uint64_t count, const Parsed& p) {
    auto [it, fresh] = index_.try_emplace({kind, name}, rep_.anomalies.size());
    if (fresh) {
      rep_.anomalies.push_back({kind, name, p.rec.ts, count, files_[p.line->file].first, p.line->number,
                                p.line->file, p.rec.ts});
      return;
    }
    Anomaly& a = rep_.anomalies[it->second];
    a.count = sat_add(a.count, count);
    a.last_at = std::max(a.last_at, p.rec.ts);
  }

  void usage(const Parsed& p, const Lifecycles& life) {
    const Record& rec = p.rec;
    auto ks = rec.obj.find("keys");
    if (ks == rec.obj.end() || !ks->is_object()) return;
    UsagePeriod period;
    period.where = p.ref();
    const std::string* start_text = rec.string_field("period_start");
    const std::string* end_text = rec.string_field("period_end");
    const auto start = start_text ? detail::parse_iso(*start_text, false) : std::nullopt;
    const auto end = end_text ? detail::parse_iso(*end_text, false) : std::nullopt;
    const bool known_start = start.has_value();
    period.start = start.value_or(rec.ts);
    period.end = end.value_or(rec.ts);
    std::uint64_t mac_failures = 0;
    for (const auto& [key_name, counters] : ks->items()) {
      if (!is_name(key_name) || !counters.is_object()) continue;
      KeyReport& k = key(key_name);
      seen(k, rec.ts);
      UsageCounters c{};
      auto take = [&c](const nlohmann::json& obj, std::size_t o) {
        if (auto v = detail::uint_member(obj, outcome_name(static_cast<Outcome>(o)))) c[o] = *v;
      };
      for (std::size_t o = 0; o < kFirstRejection; ++o) take(counters, o);
      if (auto rej = counters.find("rejected"); rej != counters.end() && rej->is_object())
        for (std::size_t o = kFirstRejection; o < kOutcomeCount; ++o) take(*rej, o);
      for (std::size_t o = 0; o < kOutcomeCount; ++o) {
        k.totals[o] = sat_add(k.totals[o], c[o]);
        period.totals[o] = sat_add(period.totals[o], c[o]);
      }
      if (period.keys.size() < 64) period.keys[key_name] = c;
      auto at = [&c](Outcome o) { return c[static_cast<std::size_t>(o)]; };
      mac_failures = sat_add(mac_failures, at(Outcome::kMacFailure));
      if (at(Outcome::kUnknownKey)) anomaly("unknown_key_name", key_name, at(Outcome::kUnknownKey), p);
      if (at(Outcome::kRevoked)) anomaly("ticket_under_revoked_key", key_name, at(Outcome::kRevoked), p);
      if (!known_start) continue;  // the lifecycle rules need the period's start
      const std::uint64_t used = sat_add(at(Outcome::kIssued), at(Outcome::kResumed));  // renewed: of resumed
      if (used && life.revoked_before(key_name, period.start))
        anomaly("used_after_revocation", key_name, used, p);
      else if (at(Outcome::kIssued) && life.decrypt_only_before(key_name, period.start))
        anomaly("issued_after_decrypt_only", key_name, at(Outcome::kIssued), p);
    }
    if (options_.mac_failure_spike && mac_failures >= options_.mac_failure_spike)
      rep_.anomalies.push_back({"mac_failure_spike", "", rec.ts, mac_failures, files_[p.line->file].first,
                                p.line->number, p.line->file, rec.ts});
    rep_.usage.push_back(std::move(period));
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
  std::vector<Parsed> records;
  std::uint64_t unreadable = 0;
  for (const Line& l : lines) {
    if (auto rec = detail::parse_record(l.raw)) records.push_back({&l, std::move(*rec)});
    else ++unreadable;
  }
  const Lifecycles life(records);
  Builder b(files, options);
  for (const Parsed& p : records) {
    if ((options.since && p.rec.ts < *options.since) || (options.until && p.rec.ts >= *options.until)) continue;
    b.add(p, life);
  }
  Report rep = b.finish();
  rep.unreadable = unreadable;
  return rep;
}

}  // namespace keysvc::audit
