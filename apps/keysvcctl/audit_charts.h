// The inline SVG pieces of `keysvcctl audit report --html` (audit_html.h): a time axis
// shared by every chart, the generations' timeline, ticket outcomes per usage record,
// and the seal coverage of each file. Built here as text, so the page needs no script
// library and fetches nothing.
//
// Every element the page's readers (and tests) look for carries a class and data-*
// attributes: <g class="generation" data-name>, <circle class="mark" data-event>,
// <rect class="phase" data-phase>, <svg class="chart" data-series> with <rect class="bar"
// data-count>, <g class="coverage" data-file> with <rect class="span" data-kind> and
// <line class="seal" data-verified>. Marks, bars and seals link to their record's line
// (record_id()).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keysvc/audit_report.h"

namespace keysvcctl::html {

// Text for HTML (element content and attribute values).
std::string escape(std::string_view text);

// "r-F-L": the id of a record's line in the page (file index, 1-based line).
std::string record_id(std::size_t file, std::size_t line);
inline std::string record_id(const keysvc::audit::RecordRef& r) { return record_id(r.file, r.line); }

// Maps Unix ms to x in a plot area [left, right] of an SVG 1000 units wide.
class TimeAxis {
 public:
  // The span of the report's records (at least one second).
  explicit TimeAxis(const keysvc::audit::Report& report);
  double x(std::int64_t ms) const;  // clamped to the plot area
  std::int64_t t0() const { return t0_; }
  std::int64_t t1() const { return t1_; }
  // Vertical grid lines with time labels above `top`, down to `bottom`.
  std::string grid(double top, double bottom) const;

  static constexpr double kLeft = 250, kRight = 985, kWidth = 1000;

 private:
  std::int64_t t0_ = 0, t1_ = 1000;
};

// One row per generation that has lifecycle records: its phases (published, active,
// decrypt-only, revoked) as bars, each lifecycle record as a mark.
std::string timeline_svg(const keysvc::audit::Report& report, const TimeAxis& axis);

// Which outcome a usage chart shows.
enum class Series { kIssued, kResumed, kRejected };
std::string_view series_name(Series s);  // "issued", "resumed", "rejected"
std::uint64_t series_count(const keysvc::UsageCounters& c, Series s);

// One bar per usage record over its period; height by its count of `series`.
std::string usage_chart_svg(const keysvc::audit::Report& report, const TimeAxis& axis, Series series);

// What verify said about one file on its own (std::nullopt: not checked in a token).
using FileCheck = std::optional<keysvc::audit::VerifyResult>;

// One row per file: the stretch covered by verified seals, the stretch after the last
// one (pending, broken or unchecked), and a tick per seal.
std::string coverage_svg(const keysvc::audit::Report& report, const std::vector<FileCheck>& checks,
                         const TimeAxis& axis);

}  // namespace keysvcctl::html
