#include "audit_html.h"

#include <ostream>
#include <string_view>

namespace keysvcctl::html {

namespace audit = keysvc::audit;

namespace {

// No network: the policy forbids every fetch; styles and the script are inline.
constexpr std::string_view kHead = R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keysvc audit report</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
body{color:#212529;background:#f8f9fa;margin:0}
main{max-width:1180px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px}
.sub{color:#6c757d;margin:0 0 18px}
section{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:16px 18px;margin:0 0 18px}
.cards{display:flex;gap:12px;flex-wrap:wrap;background:none;border:0;padding:0}
.card{flex:1;min-width:140px;background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:10px 14px}
.card b{display:block;font-size:24px}.card.bad b{color:#c92a2a}.card.good b{color:#2b8a3e}
svg{display:block;margin:4px 0 10px;font-size:12px}
svg text{fill:#343a40}svg .name{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:11.5px}
svg .tick,svg .axis-label,svg .total{fill:#868e96;font-size:11px}svg .end{text-anchor:end}svg .series{font-weight:600}
.grid{stroke:#e9ecef}.base{stroke:#adb5bd}
.phase.published{fill:#ced4da}.phase.active{fill:#40c057}.phase.decrypt-only{fill:#74c0fc}.phase.revoked{fill:#ff8787}
.mark{stroke:#fff;stroke-width:1.5}.ev-generation_created{fill:#495057}.ev-activated{fill:#2b8a3e}
.ev-decrypt_only{fill:#1971c2}.ev-revoked{fill:#c92a2a}.ev-destroyed{fill:#000}.ev-generation_refused{fill:#e8590c}
.bar.issued{fill:#40c057}.bar.resumed{fill:#339af0}.bar.rejected{fill:#fd7e14}
.span.covered{fill:#40c057}.span.pending{fill:#fcc419}.span.broken{fill:#fa5252}.span.unchecked{fill:#dee2e6}
.seal{stroke:#212529;stroke-width:2.5}.seal:not(.verified){stroke-dasharray:3 2}
a rect:hover,a circle:hover,a line:hover{opacity:.7}
.legend span{display:inline-block;margin-right:14px;color:#495057}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{color:#495057;font-weight:600;background:#f1f3f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.kind{font-weight:600;color:#c92a2a}.ok{color:#2b8a3e}.warn{color:#e67700}.err{color:#c92a2a}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.rec{white-space:pre-wrap;word-break:break-all;padding:1px 4px;border-radius:3px}
.rec .ln{display:inline-block;min-width:44px;color:#868e96;text-decoration:none}
.rec.bad code{color:#c92a2a}.rec:target,.rec.hl{background:#fff3bf}
</style></head><body><main>
)";

constexpr std::string_view kScript = R"(<script>
(function () {
  // A link to a record opens the file's listing it is in and brings the line into view.
  function reveal() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id && document.getElementById(id);
    if (!el) return;
    for (var p = el.parentElement; p; p = p.parentElement) if (p.tagName === 'DETAILS') p.open = true;
    document.querySelectorAll('.rec.hl').forEach(function (r) { r.classList.remove('hl'); });
    el.classList.add('hl');
    el.scrollIntoView({block: 'center'});
  }
  window.addEventListener('hashchange', reveal);
  reveal();
  document.documentElement.setAttribute('data-ready', '1');
})();
</script>
)";

std::string time_or_dash(const std::optional<std::int64_t>& ms) { return ms ? audit::iso8601_ms(*ms) : "-"; }

std::string card(const std::string& value, const std::string& what, const std::string& cls = {}) {
  return "<div class=\"card" + (cls.empty() ? "" : " " + cls) + "\"><b>" + escape(value) + "</b>" + escape(what) +
         "</div>";
}

std::string cell(const std::string& text, const char* cls = nullptr) {
  return std::string("<td") + (cls ? std::string(" class=\"") + cls + "\"" : "") + ">" + escape(text) + "</td>";
}

std::string record_link(std::size_t file, const std::string& name, std::size_t line) {
  return "<a href=\"#" + record_id(file, line) + "\">" + escape(name) + ":" + std::to_string(line) + "</a>";
}

// What verify said about a file, as a sentence and a class.
std::pair<std::string, const char*> verdict(const FileCheck& check, const std::string& unchecked_reason) {
  if (!check) return {"seals not checked in a token: " + unchecked_reason, "warn"};
  const audit::VerifyResult& r = *check;
  if (r.ok)
    return {"intact: " + std::to_string(r.records) + " records, " + std::to_string(r.seals) + " seal(s) verified",
            "ok"};
  std::string sealed = r.last_seal_line ? "intact and sealed up to seq " + std::to_string(r.last_seal_seq) + " (line " +
                                              std::to_string(r.last_seal_line) + ")"
                                        : "no seal verified";
  if (r.reason == audit::Failure::kUnsealedTail)
    return {"pending: " + sealed + "; " + std::to_string(r.pending) + " line(s) after it not sealed yet", "warn"};
  return {std::string(audit::to_string(r.reason)) + " at line " + std::to_string(r.first_bad_line) + ": " + r.detail +
              " (" + sealed + ")",
          "err"};
}

std::string summary(const PageInput& in) {
  const audit::Report& rep = in.report;
  std::size_t generations = 0, verified = 0;
  for (const auto& k : rep.keys) generations += k.marks.empty() ? 0 : 1;
  for (const auto& s : rep.seals) {
    const FileCheck& c = in.checks[s.where.file];
    verified += c && (c->ok || s.where.line <= c->last_seal_line) ? 1 : 0;
  }
  std::string out = "<section class=\"cards\" id=\"summary\">";
  out += card(std::to_string(rep.records), "records");
  out += card(std::to_string(generations), "generations");
  out += card(std::to_string(rep.usage.size()), "usage records");
  out += card(std::to_string(verified) + " / " + std::to_string(rep.seals.size()), "seals verified",
              verified == rep.seals.size() && verified ? "good" : "");
  out += card(std::to_string(rep.anomalies.size()), "anomalies", rep.anomalies.empty() ? "good" : "bad");
  return out + "</section>";
}

std::string legend(std::initializer_list<std::pair<const char*, const char*>> items) {
  std::string out = "<div class=\"legend\">";
  for (const auto& [color, what] : items)
    out += std::string("<span><i style=\"background:") + color + "\"></i>" + what + "</span>";
  return out + "</div>";
}

std::string seal_section(const PageInput& in, const TimeAxis& axis) {
  std::string out = "<section id=\"seals\"><h2>Seal coverage</h2>";
  out += legend({{"#40c057", "covered by verified seals"},
                 {"#fcc419", "after the last seal (pending)"},
                 {"#fa5252", "after the chain breaks"},
                 {"#dee2e6", "not checked"}});
  out += coverage_svg(in.report, in.checks, axis);
  out += "<table><tr><th>file</th><th>records</th><th>seals</th><th>verify</th></tr>";
  for (std::size_t f = 0; f < in.report.files.size(); ++f) {
    const audit::FileSummary& file = in.report.files[f];
    std::size_t seals = 0;
    for (const auto& s : in.report.seals) seals += s.where.file == f ? 1 : 0;
    auto [text, cls] = file.error.empty() ? verdict(in.checks[f], in.unchecked_reason)
                                          : std::pair<std::string, const char*>{"cannot read: " + file.error, "err"};
    out += "<tr class=\"file-verdict\" data-file=\"" + std::to_string(f) + "\">" + cell(file.name, "mono") +
           cell(std::to_string(file.records), "n") + cell(std::to_string(seals), "n") + cell(text, cls) + "</tr>";
  }
  return out + "</table></section>";
}

std::string anomaly_section(const audit::Report& rep) {
  std::string out = "<section id=\"anomalies\"><h2>Anomalies</h2>";
  if (rep.anomalies.empty()) return out + "<p class=\"ok\">none</p></section>";
  out += "<table><tr><th>kind</th><th>key name</th><th>count</th><th>first</th><th>last</th><th>record</th></tr>";
  for (const auto& a : rep.anomalies)
    out += "<tr class=\"anomaly\" data-kind=\"" + escape(a.kind) + "\">" + cell(a.kind, "kind") +
           cell(a.name.empty() ? "-" : a.name, "mono") + cell(std::to_string(a.count), "n") +
           cell(audit::iso8601_ms(a.at)) + cell(audit::iso8601_ms(a.last_at)) + "<td>" +
           record_link(a.file_index, a.file, a.line) + "</td></tr>";
  return out + "</table></section>";
}

std::string keys_section(const audit::Report& rep) {
  std::string out =
      "<section id=\"keys\"><h2>Generations and key names</h2><table><tr><th>name</th><th>created</th>"
      "<th>activated</th><th>decrypt-only</th><th>revoked</th><th>destroyed</th><th>issued</th>"
      "<th>resumed</th><th>renewed</th><th>rejected</th></tr>";
  for (const auto& k : rep.keys)
    out += "<tr class=\"key\" data-name=\"" + k.name + "\">" + cell(k.name, "mono") + cell(time_or_dash(k.created)) +
           cell(time_or_dash(k.activated)) + cell(time_or_dash(k.decrypt_only)) + cell(time_or_dash(k.revoked)) +
           cell(time_or_dash(k.destroyed)) + cell(std::to_string(k.totals[0]), "n") +
           cell(std::to_string(k.totals[1]), "n") + cell(std::to_string(k.totals[2]), "n") +
           cell(std::to_string(k.rejected()), "n") + "</tr>";
  return out + "</table></section>";
}

// Every line of every file, each with its record id (written as it goes: this is most of
// the page).
void records_section(const PageInput& in, std::ostream& out) {
  constexpr std::size_t kShown = 4000;  // characters of a line shown
  out << "<section id=\"records\"><h2>Records</h2>";
  for (std::size_t f = 0; f < in.texts.size(); ++f) {
    std::string_view text = in.texts[f].second;
    out << "<details class=\"file\" id=\"file-" << f << "\"><summary>" << escape(in.texts[f].first) << "</summary>";
    std::size_t start = 0, number = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      std::string_view raw = text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
      const bool record = raw.size() > 1 && raw.front() == '{' && raw.back() == '}';
      ++number;
      const std::string id = record_id(f, number);
      out << "<div class=\"rec" << (record ? "" : " bad") << "\" id=\"" << id << "\"><a class=\"ln\" href=\"#" << id
          << "\">" << number << "</a><code>" << escape(raw.substr(0, kShown)) << (raw.size() > kShown ? "\xe2\x80\xa6" : "")
          << "</code></div>\n";
      if (end == std::string_view::npos) break;
      start = end + 1;
    }
    out << "</details>";
  }
  out << "</section>";
}

}  // namespace

void render_page(const PageInput& in, std::ostream& page) {
  const audit::Report& rep = in.report;
  const TimeAxis axis(rep);
  std::string out(kHead);
  out += "<h1>keysvc audit report</h1><p class=\"sub\">" + std::to_string(rep.files.size()) + " file(s), " +
         std::to_string(rep.records) + " records from " + audit::iso8601_ms(axis.t0()) + " to " +
         audit::iso8601_ms(axis.t1()) +
         (rep.unreadable ? ", " + std::to_string(rep.unreadable) + " unreadable lines" : "") + "</p>";
  out += summary(in);
  out += "<section id=\"timeline-section\"><h2>Generations</h2>";
  out += legend({{"#ced4da", "published"},
                 {"#40c057", "active (encrypts)"},
                 {"#74c0fc", "decrypt-only"},
                 {"#ff8787", "revoked"},
                 {"#212529", "destroyed (end of the bar)"}});
  out += timeline_svg(rep, axis) + "</section>";
  out += "<section id=\"tickets\"><h2>Tickets per usage record</h2>";
  for (Series s : {Series::kIssued, Series::kResumed, Series::kRejected}) out += usage_chart_svg(rep, axis, s);
  out += "</section>";
  out += seal_section(in, axis);
  out += anomaly_section(rep);
  out += keys_section(rep);
  page << out;
  records_section(in, page);
  page << "</main>" << kScript << "</body></html>\n";
}

}  // namespace keysvcctl::html
