// audit report (and the audit group; audit verify is audit_verify_command.cc): summarise
// keysvc's audit logs (keysvc/audit_log.h, keysvc/audit_report.h; docs/AUDIT.md).
//
//   keysvcctl [--config FILE] audit report LOG... [--json | --html OUT] [--since T] [--until T]
//     Per key name: lifecycle events and usage totals by outcome; anomalies. Needs no
//     token (run verify first to trust it); --html with --config also checks each
//     file's seals in the token for the seal coverage. T: ISO-8601 UTC or Unix seconds.
#include <fstream>
#include <iostream>
#include <memory>
#include <vector>

#include "audit_html.h"
#include "cli.h"
#include "keysvc/audit_anchor.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_report.h"
#include "keysvc/audit_verify.h"
#include "output.h"

namespace keysvcctl {

namespace {

namespace audit = keysvc::audit;

struct ReportArgs {
  std::vector<std::string> files;
  bool json = false;
  std::string since, until, html;
};

std::string ms_text(std::int64_t ms) { return audit::iso8601_ms(ms); }
Json ms_json(const std::optional<std::int64_t>& ms) { return ms ? Json(audit::iso8601_ms(*ms)) : Json(); }

std::string place(const std::string& file, std::size_t line) { return file + ":" + std::to_string(line); }

std::optional<std::int64_t> time_option(const std::string& text, const char* option) {
  if (text.empty()) return std::nullopt;
  auto t = audit::parse_time(text);
  if (!t) throw UsageError(std::string(option) + " must be ISO-8601 UTC (2026-11-23T12:00:00Z) or Unix seconds");
  return t;
}

Json report_json(const audit::Report& rep) {
  Json keys = Json::array();
  for (const auto& k : rep.keys) {
    Json j;
    j["name"] = k.name;
    j["first_seen"] = ms_json(k.first_seen);
    j["last_seen"] = ms_json(k.last_seen);
    j["created"] = ms_json(k.created);
    j["activated"] = ms_json(k.activated);
    j["decrypt_only"] = ms_json(k.decrypt_only);
    j["revoked"] = ms_json(k.revoked);
    j["destroyed"] = ms_json(k.destroyed);
    j["issued"] = k.totals[0];
    j["resumed"] = k.totals[1];
    j["renewed"] = k.totals[2];
    Json rejected = Json::object();
    for (std::size_t o = keysvc::kFirstRejection; o < audit::kOutcomeCount; ++o)
      rejected[std::string(keysvc::outcome_name(static_cast<audit::Outcome>(o)))] = k.totals[o];
    j["rejected"] = std::move(rejected);
    keys.push_back(std::move(j));
  }
  Json anomalies = Json::array();
  for (const auto& a : rep.anomalies)
    anomalies.push_back({{"kind", a.kind},
                         {"name", a.name.empty() ? Json() : Json(a.name)},
                         {"at", ms_text(a.at)},
                         {"last_at", ms_text(a.last_at)},
                         {"count", a.count},
                         {"file", a.file},
                         {"line", a.line}});
  Json j;
  j["records"] = rep.records;
  j["unreadable_lines"] = rep.unreadable;
  j["usage_records"] = rep.usage.size();
  j["seals"] = rep.seals.size();
  j["events"] = Json(rep.events);
  j["keys"] = std::move(keys);
  j["anomalies"] = std::move(anomalies);
  return j;
}

void report_text(const audit::Report& rep) {
  std::cout << rep.records << " records"
            << (rep.unreadable ? ", " + std::to_string(rep.unreadable) + " unreadable lines" : "") << '\n';
  Table t({"name", "created", "activated", "decrypt-only", "revoked", "destroyed", "first seen", "last seen", "issued",
           "resumed", "renewed", "rejected"});
  auto opt = [](const std::optional<std::int64_t>& ms) { return ms ? ms_text(*ms) : std::string("-"); };
  for (const auto& k : rep.keys) {
    std::string rejected = std::to_string(k.rejected());
    std::string why;
    for (std::size_t o = keysvc::kFirstRejection; o < audit::kOutcomeCount; ++o)
      if (k.totals[o])
        why += (why.empty() ? "" : ", ") + std::string(keysvc::outcome_name(static_cast<audit::Outcome>(o))) + " " +
               std::to_string(k.totals[o]);
    if (!why.empty()) rejected += " (" + why + ")";
    t.add({k.name, opt(k.created), opt(k.activated), opt(k.decrypt_only), opt(k.revoked), opt(k.destroyed),
           opt(k.first_seen), opt(k.last_seen), std::to_string(k.totals[0]), std::to_string(k.totals[1]),
           std::to_string(k.totals[2]), rejected});
  }
  t.print(std::cout);
  if (rep.anomalies.empty()) {
    std::cout << "no anomalies\n";
    return;
  }
  std::cout << "anomalies:\n";
  for (const auto& a : rep.anomalies)
    std::cout << "  " << a.kind << (a.name.empty() ? "" : " " + a.name) << ": " << a.count << " (first at "
              << ms_text(a.at) << ", " << place(a.file, a.line) << ")\n";
}

// The HTML page: the files as read, each one's seals checked in the token if keysvcctl
// has a config (a token that cannot be used leaves them unchecked, with the reason).
int report_html(const Cli& cli, const ReportArgs& args, const audit::ReportOptions& options) {
  std::vector<audit::LogText> texts;
  std::vector<std::string> errors;
  for (const auto& path : args.files) {
    std::string error;
    texts.emplace_back(path, audit::read_log_file(path, error).value_or(std::string()));
    if (!error.empty())
      std::cerr << "keysvcctl: audit report: " << path << ": cannot read the file (" << error << ")\n";
    errors.push_back(error);
  }
  audit::Report rep = audit::report_texts(texts, options);
  for (std::size_t f = 0; f < errors.size(); ++f) rep.files[f].error = errors[f];
  std::vector<html::FileCheck> checks(texts.size());
  std::string unchecked = "run with --config to verify them";
  if (!cli.config_path_view().empty()) {
    try {
      keysvc::Config config;
      auto gateway = cli.open_gateway(&config, Cli::AuditFile::kLeave);
      const audit::TokenView view = audit::token_view(*gateway, config.audit);
      for (std::size_t f = 0; f < texts.size(); ++f)
        if (errors[f].empty()) checks[f] = audit::verify_texts({texts[f]}, view);
    } catch (const std::exception& e) {
      unchecked = e.what();
      std::cerr << "keysvcctl: audit report: seals not checked: " << e.what() << '\n';
    }
  }
  std::ofstream out(args.html, std::ios::binary | std::ios::trunc);
  html::render_page({rep, texts, checks, unchecked}, out);
  out.flush();
  if (!out) throw std::runtime_error("cannot write " + args.html);
  std::cout << "wrote " << args.html << ": " << rep.records << " records, " << rep.keys.size() << " key names, "
            << rep.anomalies.size() << " anomalies\n";
  return kExitOk;
}

int report(const Cli& cli, const ReportArgs& args) {
  audit::ReportOptions options;
  options.since = time_option(args.since, "--since");
  options.until = time_option(args.until, "--until");
  if (!args.html.empty()) return report_html(cli, args, options);
  audit::Report rep = audit::report(args.files, options);
  for (const auto& f : rep.files)
    if (!f.error.empty())
      std::cerr << "keysvcctl: audit report: " << f.name << ": cannot read the file (" << f.error << ")\n";
  if (args.json)
    std::cout << dump_pretty(report_json(rep)) << '\n';
  else
    report_text(rep);
  return kExitOk;
}

}  // namespace

void add_audit_commands(Cli& cli) {
  CLI::App* group = cli.add_group("audit", "Check and summarise keysvc's audit logs");

  add_audit_verify_command(cli, group);

  auto r = std::make_shared<ReportArgs>();
  CLI::App* report_cmd = cli.add_command(
      "report", "Per key name: lifetime and usage totals by outcome, and anomalies (reads the files only)",
      [&cli, r] { return report(cli, *r); }, group);
  report_cmd->add_option("files", r->files, "audit log files")->required()->type_name("LOG");
  report_cmd->add_option("--since", r->since, "only records at or after T (ISO-8601 UTC or Unix seconds)")
      ->type_name("T");
  report_cmd->add_option("--until", r->until, "only records before T")->type_name("T");
  CLI::Option* json = Cli::add_json_flag(report_cmd, r->json);
  report_cmd
      ->add_option("--html", r->html,
                   "write the report as one self-contained HTML page (timeline, charts, seal coverage, anomalies "
                   "linked to their records); with --config, each file's seals are verified in the token")
      ->type_name("OUT.html")
      ->excludes(json);
}

}  // namespace keysvcctl
