#include "audit_charts.h"

#include <algorithm>
#include <cstdio>
#include <initializer_list>

namespace keysvcctl::html {

namespace audit = keysvc::audit;

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string time_text(std::int64_t ms) { return audit::iso8601_ms(ms); }

// The part of a name or path shown in a chart's label column.
std::string label(std::string_view text, std::size_t max) {
  if (text.size() <= max) return std::string(text);
  return "\xe2\x80\xa6" + std::string(text.substr(text.size() - (max - 1)));  // "…" + the end
}

std::string svg_open(const std::string& cls, double height, const std::string& attrs = {}) {
  return "<svg class=\"" + cls + "\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + num(TimeAxis::kWidth) +
         " " + num(height) + "\" width=\"100%\" preserveAspectRatio=\"xMinYMin meet\"" + attrs + ">";
}

std::string rect(const std::string& cls, double x0, double x1, double y, double h, const std::string& attrs,
                 const std::string& title) {
  const double w = std::max(x1 - x0, 3.0);  // a short stretch stays visible
  return "<rect class=\"" + cls + "\" x=\"" + num(x0) + "\" y=\"" + num(y) + "\" width=\"" + num(w) +
         "\" height=\"" + num(h) + "\"" + attrs + "><title>" + escape(title) + "</title></rect>";
}

std::string link(const audit::RecordRef& r, const std::string& inner) {
  return "<a href=\"#" + record_id(r) + "\">" + inner + "</a>";
}

std::string text(double x, double y, const std::string& cls, const std::string& content) {
  return "<text class=\"" + cls + "\" x=\"" + num(x) + "\" y=\"" + num(y) + "\">" + escape(content) + "</text>";
}

// The earliest of `candidates` after `start`, else `otherwise`.
std::int64_t next_after(std::int64_t start, std::initializer_list<std::optional<std::int64_t>> candidates,
                        std::int64_t otherwise) {
  std::optional<std::int64_t> best;
  for (const auto& c : candidates)
    if (c && *c >= start && (!best || *c < *best)) best = c;
  return best.value_or(otherwise);
}

}  // namespace

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string record_id(std::size_t file, std::size_t line) {
  return "r-" + std::to_string(file) + "-" + std::to_string(line);
}

TimeAxis::TimeAxis(const audit::Report& report) {
  bool any = false;
  for (const auto& f : report.files) {
    if (!f.first) continue;
    t0_ = any ? std::min(t0_, *f.first) : *f.first;
    t1_ = any ? std::max(t1_, *f.last) : *f.last;
    any = true;
  }
  if (!any) t0_ = 0, t1_ = 0;
  if (t1_ - t0_ < 1000) t1_ = t0_ + 1000;
}

double TimeAxis::x(std::int64_t ms) const {
  const double f = static_cast<double>(std::clamp(ms, t0_, t1_) - t0_) / static_cast<double>(t1_ - t0_);
  return kLeft + f * (kRight - kLeft);
}

std::string TimeAxis::grid(double top, double bottom) const {
  constexpr int kTicks = 5;
  // Labels as fine as the span needs: "12:00:03.250", "12:00:03" or "11-23T12:00".
  const std::int64_t span = t1_ - t0_;
  const std::size_t from = span < 86400000 ? 11 : 5, length = span < 20000 ? 12 : span < 86400000 ? 8 : 11;
  std::string out;
  for (int k = 0; k < kTicks; ++k) {
    const std::int64_t t = t0_ + (t1_ - t0_) * k / (kTicks - 1);
    const double at = x(t);
    const std::string iso = time_text(t);
    out += "<line class=\"grid\" x1=\"" + num(at) + "\" x2=\"" + num(at) + "\" y1=\"" + num(top) + "\" y2=\"" +
           num(bottom) + "\"/>";
    out += "<text class=\"tick\" x=\"" + num(at) + "\" y=\"" + num(top - 4) + "\" text-anchor=\"" +
           (k == 0 ? "start" : k == kTicks - 1 ? "end" : "middle") + "\">" +
           escape(iso.substr(from, length)) + "</text>";
  }
  return out;
}

std::string timeline_svg(const audit::Report& report, const TimeAxis& axis) {
  constexpr double kTop = 24, kRow = 30;
  std::vector<const audit::KeyReport*> rows;
  for (const auto& k : report.keys)
    if (!k.marks.empty()) rows.push_back(&k);
  const double height = kTop + kRow * static_cast<double>(std::max<std::size_t>(rows.size(), 1)) + 6;
  std::string out = svg_open("timeline", height, " data-generations=\"" + std::to_string(rows.size()) + "\"");
  out += axis.grid(kTop, height - 4);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const audit::KeyReport& k = *rows[i];
    const double mid = kTop + kRow * static_cast<double>(i) + kRow / 2;
    const std::int64_t end = k.destroyed.value_or(axis.t1());
    out += "<g class=\"generation\" data-name=\"" + k.name + "\">";
    out += "<text class=\"name\" x=\"4\" y=\"" + num(mid + 4) + "\"><title>" + k.name + "</title>" + k.name + "</text>";
    struct Phase {
      const char* name;
      std::optional<std::int64_t> from;
      std::int64_t until;
    };
    const Phase phases[] = {
        {"published", k.created, next_after(k.created.value_or(0), {k.activated, k.decrypt_only, k.revoked}, end)},
        {"active", k.activated, next_after(k.activated.value_or(0), {k.decrypt_only, k.revoked}, end)},
        {"decrypt-only", k.decrypt_only, next_after(k.decrypt_only.value_or(0), {k.revoked}, end)},
        {"revoked", k.revoked, end},
    };
    for (const Phase& p : phases)
      if (p.from)
        out += rect("phase " + std::string(p.name), axis.x(*p.from), axis.x(p.until), mid - 7, 14,
                    " data-phase=\"" + std::string(p.name) + "\"",
                    std::string(p.name) + ": " + time_text(*p.from) + " to " + time_text(p.until));
    double last_x = -100;
    for (const auto& m : k.marks) {
      double cx = axis.x(m.where.at);
      if (cx - last_x < 9) cx = last_x + 9;  // marks at the same time side by side
      last_x = cx;
      out += link(m.where, "<circle class=\"mark ev-" + m.event + "\" data-event=\"" + m.event + "\" cx=\"" +
                               num(cx) + "\" cy=\"" + num(mid) + "\" r=\"6\"><title>" +
                               escape(m.event + " " + time_text(m.where.at) + " (" +
                                      report.files[m.where.file].name + ":" + std::to_string(m.where.line) + ")") +
                               "</title></circle>");
    }
    out += "</g>";
  }
  if (rows.empty()) out += text(4, kTop + 18, "empty", "no lifecycle records in range");
  return out + "</svg>";
}

std::string_view series_name(Series s) {
  switch (s) {
    case Series::kIssued: return "issued";
    case Series::kResumed: return "resumed";
    case Series::kRejected: return "rejected";
  }
  return "?";
}

std::uint64_t series_count(const keysvc::UsageCounters& c, Series s) {
  switch (s) {
    case Series::kIssued: return c[static_cast<std::size_t>(keysvc::TicketOutcome::kIssued)];
    case Series::kResumed: return c[static_cast<std::size_t>(keysvc::TicketOutcome::kResumed)];
    case Series::kRejected: {
      std::uint64_t n = 0;
      for (std::size_t o = keysvc::kFirstRejection; o < c.size(); ++o) n += c[o];
      return n;
    }
  }
  return 0;
}

std::string usage_chart_svg(const audit::Report& report, const TimeAxis& axis, Series series) {
  constexpr double kTop = 22, kBottom = 112, kHeight = 120;
  const std::string name(series_name(series));
  std::uint64_t max = 0, total = 0;
  for (const auto& p : report.usage) {
    max = std::max(max, series_count(p.totals, series));
    total += series_count(p.totals, series);
  }
  std::string out = svg_open("chart " + name, kHeight,
                             " data-series=\"" + name + "\" data-total=\"" + std::to_string(total) + "\"");
  out += axis.grid(kTop, kBottom);
  out += text(4, kTop + 14, "series", name);
  out += text(4, kTop + 32, "total", std::to_string(total) + " in " + std::to_string(report.usage.size()) +
                                         " usage record(s)");
  out += text(axis.kLeft - 6, kTop + 10, "axis-label end", std::to_string(max));
  out += text(axis.kLeft - 6, kBottom, "axis-label end", "0");
  out += "<line class=\"base\" x1=\"" + num(axis.kLeft) + "\" x2=\"" + num(axis.kRight) + "\" y1=\"" + num(kBottom) +
         "\" y2=\"" + num(kBottom) + "\"/>";
  for (const auto& p : report.usage) {
    const std::uint64_t n = series_count(p.totals, series);
    const double h = max ? (kBottom - kTop - 8) * static_cast<double>(n) / static_cast<double>(max) : 0;
    out += link(p.where, rect("bar " + name, axis.x(p.start), axis.x(p.end), kBottom - h, h,
                              " data-count=\"" + std::to_string(n) + "\"",
                              std::to_string(n) + " " + name + ", " + time_text(p.start) + " to " + time_text(p.end)));
  }
  return out + "</svg>";
}

std::string coverage_svg(const audit::Report& report, const std::vector<FileCheck>& checks, const TimeAxis& axis) {
  constexpr double kTop = 24, kRow = 30;
  const double height = kTop + kRow * static_cast<double>(std::max<std::size_t>(report.files.size(), 1)) + 6;
  std::string out = svg_open("coverage-chart", height);
  out += axis.grid(kTop, height - 4);
  for (std::size_t f = 0; f < report.files.size(); ++f) {
    const audit::FileSummary& file = report.files[f];
    const FileCheck& check = checks[f];
    const double mid = kTop + kRow * static_cast<double>(f) + kRow / 2;
    out += "<g class=\"coverage\" data-file=\"" + std::to_string(f) + "\">";
    out += "<text class=\"name\" x=\"4\" y=\"" + num(mid + 4) + "\"><title>" + escape(file.name) + "</title>" +
           escape(label(file.name, 34)) + "</text>";
    if (file.first) {
      const std::int64_t first = *file.first, last = *file.last;
      auto span = [&](const char* kind, std::int64_t from, std::int64_t until) {
        out += rect(std::string("span ") + kind, axis.x(from), axis.x(until), mid - 7, 14,
                    std::string(" data-kind=\"") + kind + "\"",
                    std::string(kind) + ": " + time_text(from) + " to " + time_text(until));
      };
      if (!check) {
        span("unchecked", first, last);
      } else {
        const bool sealed = check->last_seal_line > 0;
        const std::int64_t sealed_until = sealed ? std::clamp(check->last_seal_ts, first, last) : first;
        if (sealed) span("covered", first, sealed_until);
        if (!check->ok)
          span(check->reason == audit::Failure::kUnsealedTail ? "pending" : "broken", sealed_until, last);
      }
    }
    for (const auto& s : report.seals) {
      if (s.where.file != f) continue;
      const bool verified = check && (check->ok || s.where.line <= check->last_seal_line);
      const double x = axis.x(s.where.at);
      out += link(s.where, "<line class=\"seal" + std::string(verified ? " verified" : "") + "\" data-verified=\"" +
                               (verified ? "true" : "false") + "\" x1=\"" + num(x) + "\" x2=\"" + num(x) + "\" y1=\"" +
                               num(mid - 11) + "\" y2=\"" + num(mid + 11) + "\"><title>" +
                               escape("seal seq " + std::to_string(s.seq) + " " + time_text(s.where.at) +
                                      (verified ? " (verified in the token)" : " (not verified)")) +
                               "</title></line>");
    }
    out += "</g>";
  }
  return out + "</svg>";
}

}  // namespace keysvcctl::html
