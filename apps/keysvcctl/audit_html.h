// `keysvcctl audit report --html OUT.html`: the report as one self-contained HTML page
// (inline CSS, inline SVG charts from audit_charts.h, a few lines of inline script; it
// fetches nothing). Sections: summary, the generations' timeline, tickets issued /
// resumed / rejected per usage record, seal coverage per file, anomalies, the
// generations table, and every line of every file with an id (record_id()) that the
// marks, bars, seals and anomalies link to.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "audit_charts.h"
#include "keysvc/audit_report.h"

namespace keysvcctl::html {

struct PageInput {
  const keysvc::audit::Report& report;
  const std::vector<keysvc::audit::LogText>& texts;  // the files as read (same order as report.files)
  const std::vector<FileCheck>& checks;              // verify() per file, or std::nullopt
  std::string unchecked_reason;  // why the seals were not checked in a token (if they were not)
};

// Writes the whole page to `page`.
void render_page(const PageInput& in, std::ostream& page);

}  // namespace keysvcctl::html
