// doctor: run every check of doctor.h against the configured token and print a table
// (or --json) with a verdict per line. Exit 1 if keysvc cannot run on the token.
#include <cstdio>
#include <iostream>

#include "cli.h"
#include "doctor.h"
#include "output.h"

namespace keysvcctl {

namespace {

std::string latency_text(const Finding& f) {
  if (f.calls == 0) return "";
  char buf[48];
  if (f.median_us >= 10000) std::snprintf(buf, sizeof buf, "%.0f ms", f.median_us / 1000);
  else if (f.median_us >= 1000) std::snprintf(buf, sizeof buf, "%.1f ms", f.median_us / 1000);
  else std::snprintf(buf, sizeof buf, "%.0f us", f.median_us);
  return std::string(buf) + (f.calls > 1 ? " (x" + std::to_string(f.calls) + ")" : "");
}

int doctor(const Cli& cli, bool json) {
  const keysvc::Config config = cli.load_config();
  const DoctorReport report = run_doctor(config);
  if (json) {
    Json findings = Json::array();
    for (const auto& f : report.findings) {
      Json j;
      j["check"] = f.check;
      j["what"] = f.what;
      j["verdict"] = std::string(verdict_name(f.verdict));
      j["detail"] = f.detail;
      j["median_us"] = f.calls ? Json(static_cast<std::int64_t>(f.median_us + 0.5)) : Json();
      j["calls"] = f.calls;
      findings.push_back(std::move(j));
    }
    Json j;
    j["config"] = cli.config_path_view();
    j["usable"] = report.usable();
    j["findings"] = std::move(findings);
    std::cout << dump_pretty(j) << '\n';
  } else {
    Table t({"CHECK", "WHAT", "VERDICT", "LATENCY", "DETAIL"});
    for (const auto& f : report.findings) t.add({f.check, f.what, verdict_name(f.verdict), latency_text(f), f.detail});
    t.print(std::cout);
    std::cout << (report.usable() ? "keysvc can run on this token\n" : "keysvc cannot run on this token as configured\n");
  }
  return report.usable() ? kExitOk : kExitFailure;
}

}  // namespace

void add_doctor_command(Cli& cli) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = cli.add_command(
      "doctor",
      "Check everything keysvc relies on in the configured token (mechanisms, key generation and custody, HMAC, "
      "data objects, search, session copies and limits, rescans) with each operation's latency and what it means "
      "for handshakes per second. Leaves nothing in the token. Exit 1 if keysvc cannot run on it",
      [&cli, json] { return doctor(cli, *json); });
  Cli::add_json_flag(cmd, *json);
}

}  // namespace keysvcctl
