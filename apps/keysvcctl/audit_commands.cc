// audit verify, audit report: check and summarise keysvc's audit logs
// (keysvc/audit_log.h, keysvc/audit_verify.h).
//
//   keysvcctl --config FILE audit verify LOG... [--json]
//     Checks the hash chain across the files (given oldest first) and every seal's MAC
//     in the token (the audit key named by each seal). Exit 0 only if intact; otherwise
//     exit 1 and one line on stderr: "keysvcctl: audit verify: LOG:LINE: REASON: detail".
//   keysvcctl audit report LOG... [--json] [--since T] [--until T]
//     Per key name: lifetime events and usage totals by outcome; anomalies. Needs no
//     token (run verify first to trust it). T: ISO-8601 UTC or Unix seconds.
#include <iostream>
#include <memory>
#include <vector>

#include "cli.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_verify.h"
#include "output.h"

namespace keysvcctl {

namespace {

namespace audit = keysvc::audit;

struct AuditArgs {
  std::vector<std::string> files;
  bool json = false;
  std::string since, until;
};

std::string ms_text(std::int64_t ms) { return audit::iso8601_ms(ms); }
Json ms_json(const std::optional<std::int64_t>& ms) { return ms ? Json(audit::iso8601_ms(*ms)) : Json(); }

int verify(const Cli& cli, const AuditArgs& args) {
  auto gateway = cli.open_gateway();
  audit::VerifyResult r = audit::verify(args.files, audit::token_keyed_hmac(*gateway));
  if (!r.ok) {
    std::string where = r.first_bad_file.empty() ? std::string("(no files)")
                                                 : r.first_bad_file + ":" + std::to_string(r.first_bad_line);
    std::cerr << "keysvcctl: audit verify: " << where << ": " << audit::to_string(r.reason)
              << (r.detail.empty() ? "" : ": " + r.detail) << std::endl;
    return kExitFailure;
  }
  if (args.json) {
    Json j;
    j.set("ok", true);
    j.set("files", static_cast<std::int64_t>(args.files.size()));
    j.set("records", r.records);
    j.set("seals", r.seals);
    j.set("last_seq", r.last_seq);
    j.set("from_genesis", r.from_genesis);
    std::cout << j.dump() << '\n';
  } else {
    std::cout << "intact: " << r.records << " records, " << r.seals << " seals, last seq " << r.last_seq
              << (r.from_genesis ? ", from the start of the chain" : ", continuing an earlier chain") << '\n';
  }
  return kExitOk;
}

std::optional<std::int64_t> time_option(const std::string& text, const char* option) {
  if (text.empty()) return std::nullopt;
  auto t = audit::parse_time(text);
  if (!t) throw UsageError(std::string(option) + " must be ISO-8601 UTC (2026-11-23T12:00:00Z) or Unix seconds");
  return t;
}

int report(const AuditArgs& args) {
  audit::ReportOptions options;
  options.since = time_option(args.since, "--since");
  options.until = time_option(args.until, "--until");
  audit::Report rep = audit::report(args.files, options);
  if (args.json) {
    Json keys{Json::Array{}};
    for (const auto& k : rep.keys) {
      Json j;
      j.set("name", k.name);
      j.set("first_seen", ms_json(k.first_seen));
      j.set("last_seen", ms_json(k.last_seen));
      j.set("created", ms_json(k.created));
      j.set("activated", ms_json(k.activated));
      j.set("decrypt_only", ms_json(k.decrypt_only));
      j.set("revoked", ms_json(k.revoked));
      j.set("destroyed", ms_json(k.destroyed));
      j.set("issued", k.totals[0]);
      j.set("resumed", k.totals[1]);
      j.set("renewed", k.totals[2]);
      Json rejected;
      for (std::size_t o = keysvc::kFirstRejection; o < audit::kOutcomeCount; ++o)
        rejected.set(std::string(keysvc::outcome_name(static_cast<audit::Outcome>(o))), k.totals[o]);
      j.set("rejected", std::move(rejected));
      keys.push(std::move(j));
    }
    Json anomalies{Json::Array{}};
    for (const auto& a : rep.anomalies) {
      Json j;
      j.set("kind", a.kind);
      j.set("name", a.name.empty() ? Json() : Json(a.name));
      j.set("at", ms_text(a.at));
      j.set("count", a.count);
      j.set("file", a.file);
      j.set("line", static_cast<std::int64_t>(a.line));
      anomalies.push(std::move(j));
    }
    Json events;
    for (const auto& [e, n] : rep.events) events.set(e, n);
    Json j;
    j.set("records", rep.records);
    j.set("unreadable_lines", rep.unreadable);
    j.set("events", std::move(events));
    j.set("keys", std::move(keys));
    j.set("anomalies", std::move(anomalies));
    std::cout << j.dump() << '\n';
    return kExitOk;
  }
  std::cout << rep.records << " records" << (rep.unreadable ? ", " + std::to_string(rep.unreadable) + " unreadable lines" : "")
            << '\n';
  Table t({"name", "created", "revoked", "destroyed", "first seen", "last seen", "issued", "resumed", "renewed",
           "rejected"});
  auto opt = [](const std::optional<std::int64_t>& ms) { return ms ? ms_text(*ms) : std::string("-"); };
  for (const auto& k : rep.keys) {
    std::string rejected = std::to_string(k.rejected());
    std::string why;
    for (std::size_t o = keysvc::kFirstRejection; o < audit::kOutcomeCount; ++o)
      if (k.totals[o])
        why += (why.empty() ? "" : ", ") + std::string(keysvc::outcome_name(static_cast<audit::Outcome>(o))) + " " +
               std::to_string(k.totals[o]);
    if (!why.empty()) rejected += " (" + why + ")";
    t.add({k.name, opt(k.created), opt(k.revoked), opt(k.destroyed), opt(k.first_seen), opt(k.last_seen),
           std::to_string(k.totals[0]), std::to_string(k.totals[1]), std::to_string(k.totals[2]), rejected});
  }
  t.print(std::cout);
  if (rep.anomalies.empty()) {
    std::cout << "no anomalies\n";
  } else {
    std::cout << "anomalies:\n";
    for (const auto& a : rep.anomalies)
      std::cout << "  " << a.kind << (a.name.empty() ? "" : " " + a.name) << ": " << a.count << " (first at "
                << ms_text(a.at) << ", " << a.file << ":" << a.line << ")\n";
  }
  return kExitOk;
}

}  // namespace

void add_audit_commands(Cli& cli) {
  CLI::App* group = cli.add_group("audit", "Check and summarise keysvc's audit logs");

  auto v = std::make_shared<AuditArgs>();
  CLI::App* verify_cmd = cli.add_command(
      "verify",
      "Check the hash chain of LOG... (oldest first) and every seal's MAC in the token; exit 0 only if intact",
      [&cli, v] { return verify(cli, *v); }, group);
  verify_cmd->add_option("files", v->files, "audit log files, oldest first")->required()->type_name("LOG");
  Cli::add_json_flag(verify_cmd, v->json);

  auto r = std::make_shared<AuditArgs>();
  CLI::App* report_cmd = cli.add_command(
      "report", "Per key name: lifetime and usage totals by outcome, and anomalies (reads the files only)",
      [r] { return report(*r); }, group);
  report_cmd->add_option("files", r->files, "audit log files")->required()->type_name("LOG");
  report_cmd->add_option("--since", r->since, "only records at or after T (ISO-8601 UTC or Unix seconds)")
      ->type_name("T");
  report_cmd->add_option("--until", r->until, "only records before T")->type_name("T");
  Cli::add_json_flag(report_cmd, r->json);
}

}  // namespace keysvcctl
