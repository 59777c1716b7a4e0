// audit verify: check keysvc's audit logs (keysvc/audit_verify.h; docs/AUDIT.md).
//
//   keysvcctl --config FILE audit verify LOG... [--allow-pending] [--json]
//     Checks each writer's chain in LOG...: the hash chain across its files (a file and
//     its rotated successors, oldest first), every seal's MAC in the token (the audit key
//     named by each seal) and the files against the token's anchor of the chain
//     (audit_anchor.h). Files of several writers may be given together (a folder of
//     per-process files): a file whose first record starts a chain begins a new one, and
//     each chain is verified on its own. Exit codes (the worst over the chains):
//       0  intact: every record is covered by a verified seal, and the file ends at or
//          after the seal the token anchors (with --allow-pending, also a chain intact up
//          to its last verified seal with records after it)
//       1  a chain is broken or a file is not an audit log: edited, deleted, reordered,
//          bad_seal, truncated, unverified_tail, foreign, malformed (a file that cannot
//          be read included)
//       2  usage (no --config, bad arguments)
//       3  pending: intact up to the last verified seal, records after it not sealed yet
//          (unsealed_tail: a running writer's file between two seals)
//       4  seals and anchors not checked (the config, the token or a PKCS#11 call failed);
//          the hash chains were, and are intact (a broken one is exit 1)
//     Each chain not accepted prints one line on stderr: "keysvcctl: audit verify:
//     LOG:LINE: REASON: detail" (and without the token, one more saying what was not
//     checked).
#include <fstream>
#include <iostream>
#include <memory>
#include <vector>

#include "cli.h"
#include "keysvc/audit_anchor.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_verify.h"
#include "output.h"

namespace keysvcctl {

namespace {

namespace audit = keysvc::audit;

constexpr int kExitPending = 3;
constexpr int kExitCannotCheck = 4;

struct VerifyArgs {
  std::vector<std::string> files;
  bool json = false;
  bool allow_pending = false;
};

std::string ms_text(std::int64_t ms) { return audit::iso8601_ms(ms); }
std::string place(const std::string& file, std::size_t line) { return file + ":" + std::to_string(line); }

// The given files as chains, in order: a file whose first record is a chain_start that
// starts a chain (prev_seq 0) or names another chain than the file before begins one;
// a file that continues the one before (rotation), or that cannot be read, joins it.
std::vector<std::vector<std::string>> chains_of(const std::vector<std::string>& files) {
  std::vector<std::vector<std::string>> chains;
  std::string chain;  // the current chain's id ("" for a log from before anchors)
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::string first;
    std::getline(in, first);
    Json j = Json::parse(first, nullptr, /*allow_exceptions=*/false);
    bool starts = chains.empty();
    if (j.is_object() && j.value("event", "") == "chain_start") {
      const std::string id = j.contains("chain") && j["chain"].is_string() ? j["chain"].get<std::string>() : "";
      const bool continues = j.contains("prev_seq") && j["prev_seq"].is_number_unsigned() &&
                             j["prev_seq"].get<std::uint64_t>() > 0 && id == chain;
      starts = starts || !continues;
      chain = id;
    }
    if (starts) chains.emplace_back();
    chains.back().push_back(file);
  }
  return chains;
}

// "intact", "pending" or the failure's name.
std::string verdict_name(const audit::VerifyResult& r) {
  return r.ok                                        ? "intact"
         : r.reason == audit::Failure::kUnsealedTail ? "pending"
                                                     : std::string(audit::to_string(r.reason));
}

std::string sealed_text(const audit::VerifyResult& r) {
  return r.last_seal_line ? "intact and sealed up to seq " + std::to_string(r.last_seal_seq) + " at " +
                                place(r.last_seal_file, r.last_seal_line)
                          : "no seal yet";
}

Json verify_json(const audit::VerifyResult& r, std::size_t files, int exit_code) {
  Json j;
  j["verdict"] = verdict_name(r);
  j["ok"] = r.ok;
  j["exit_code"] = exit_code;
  j["files"] = files;
  j["records"] = r.records;
  j["seals"] = r.seals;
  j["last_seq"] = r.last_seq;
  j["from_genesis"] = r.from_genesis;
  j["last_seal"] = r.last_seal_line ? Json{{"file", r.last_seal_file},
                                           {"line", r.last_seal_line},
                                           {"seq", r.last_seal_seq},
                                           {"at", ms_text(r.last_seal_ts)}}
                                    : Json();
  j["chain"] = r.chain.empty() ? Json() : Json(r.chain);
  j["anchor"] = r.anchored ? Json{{"seal", r.anchor_seal}, {"sealed_at", ms_text(r.anchor_sealed_at)}} : Json();
  j["legacy"] = r.legacy;
  j["unanchored_lines"] = r.unanchored_lines;
  j["unchecked"] = r.unchecked.empty() ? Json() : Json(r.unchecked);
  if (!r.ok) {
    j["reason"] = std::string(audit::to_string(r.reason));
    j["file"] = r.first_bad_file.empty() ? Json() : Json(r.first_bad_file);
    j["line"] = r.first_bad_line;
    j["detail"] = r.detail;
    j["pending"] = r.pending;
    j["pending_marked"] = r.pending_marked;
  }
  return j;
}

// What the intact line adds about the token's anchor, or what was not checked.
std::string anchor_text(const audit::VerifyResult& r) {
  if (r.anchored)
    return "; anchored in the token: chain " + r.chain + ", seal at seq " + std::to_string(r.anchor_seal) + " (" +
           ms_text(r.anchor_sealed_at) + ")" +
           (r.unanchored_lines ? ", after " + std::to_string(r.unanchored_lines) + " line(s) from before its anchor"
                               : std::string());
  return r.unchecked.empty() ? std::string() : "; not checked: " + r.unchecked;
}

// One chain's verdict: prints its lines and returns its exit code. `no_token` is why
// seals and anchors could not be checked ("" when they were).
int report_chain(const audit::VerifyResult& r, const std::vector<std::string>& files, const VerifyArgs& args,
                 const std::string& no_token, const std::string& prefix, Json& json) {
  const bool pending = !r.ok && r.reason == audit::Failure::kUnsealedTail;
  const bool broken = !r.ok && !pending;
  if (!no_token.empty() && !broken) {
    std::cerr << "keysvcctl: audit verify: " << prefix << "seals and anchors not checked (" << no_token
              << "): the hash chain of " << r.records << " record(s) is intact up to seq " << r.last_seq << std::endl;
    json = verify_json(r, files.size(), kExitCannotCheck);
    return kExitCannotCheck;
  }
  // A tail is only accepted after a verified seal: a file with none vouches for nothing.
  const bool accepted = r.ok || (pending && args.allow_pending && r.last_seal_line > 0);
  const int code = accepted ? kExitOk : pending ? kExitPending : kExitFailure;
  if (!accepted) {
    std::string where =
        r.first_bad_file.empty() ? std::string("(no files)") : place(r.first_bad_file, r.first_bad_line);
    std::string detail = r.detail;
    if (pending)
      detail += " (" + sealed_text(r) + (r.last_seal_line ? "; --allow-pending accepts a running writer's tail)" : ")");
    std::cerr << "keysvcctl: audit verify: " << where << ": " << audit::to_string(r.reason)
              << (detail.empty() ? "" : ": " + detail) << std::endl;
    if (!no_token.empty()) std::cerr << "keysvcctl: audit verify: seals and anchors not checked: " << no_token << std::endl;
  }
  json = verify_json(r, files.size(), code);
  if (args.json) return code;
  if (r.ok)
    std::cout << prefix << "intact: " << r.records << " records, " << r.seals << " seals, last seq " << r.last_seq
              << (r.from_genesis ? ", from the start of the chain" : ", continuing an earlier chain") << anchor_text(r)
              << '\n';
  else if (accepted)
    std::cout << prefix << "pending: " << sealed_text(r) << " (" << r.seals << " seal(s)); " << r.pending
              << " line(s) after it not sealed yet, from " << place(r.first_bad_file, r.first_bad_line)
              << anchor_text(r) << '\n';
  return code;
}

int verify(const Cli& cli, const VerifyArgs& args) {
  // Without the token (config, module, login): the chains are still checked, seals and
  // anchors are not, and exit 4 says so unless a chain is broken anyway.
  std::unique_ptr<keysvc::TokenGateway> gateway;
  keysvc::Config config;
  std::string no_token;
  try {
    gateway = cli.open_gateway(&config, Cli::AuditFile::kLeave);
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception& e) {
    no_token = e.what();
  }
  const std::vector<std::vector<std::string>> chains = chains_of(args.files);
  std::vector<audit::VerifyResult> results;
  try {
    const audit::TokenView view = gateway ? audit::token_view(*gateway, config.audit) : audit::TokenView();
    for (const auto& files : chains) results.push_back(audit::verify(files, view));
  } catch (const std::exception& e) {
    std::cerr << "keysvcctl: audit verify: nothing checked: " << e.what() << std::endl;
    return kExitCannotCheck;
  }
  // The worst: broken, then pending, then not checked, then intact.
  auto rank = [](int code) { return code == kExitFailure ? 3 : code == kExitPending ? 2 : code == kExitCannotCheck; };
  int worst = kExitOk;
  Json all = Json::array();
  for (std::size_t c = 0; c < chains.size(); ++c) {
    const std::string prefix = chains.size() > 1 ? chains[c].front() + ": " : "";
    Json j;
    const int code = report_chain(results[c], chains[c], args, no_token, prefix, j);
    if (rank(code) > rank(worst)) worst = code;
    if (chains.size() > 1) j["file_names"] = chains[c];
    all.push_back(std::move(j));
  }
  if (args.json) std::cout << dump_pretty(all.size() == 1 ? all[0] : Json{{"exit_code", worst}, {"chains", all}}) << '\n';
  return worst;
}

}  // namespace

void add_audit_verify_command(Cli& cli, CLI::App* group) {
  auto v = std::make_shared<VerifyArgs>();
  CLI::App* verify_cmd = cli.add_command(
      "verify",
      "Check each writer's chain in LOG... (a file and its rotated successors oldest first; files of several writers "
      "are verified each on its own): the hash chain, every seal's MAC in the token and the token's anchor of the "
      "chain. Exit 0 intact, 1 broken (tampered, truncated, rolled back, from another writer or token, or not a log), "
      "3 pending (intact up to the last seal, records after it), 4 seals and anchors not checked (config or token "
      "failure; the hash chain is intact)",
      [&cli, v] { return verify(cli, *v); }, group);
  verify_cmd->add_option("files", v->files, "audit log files, oldest first")->required()->type_name("LOG");
  verify_cmd->add_flag("--allow-pending", v->allow_pending,
                       "exit 0 for a chain intact up to its last verified seal with records after it (a running "
                       "writer's file); those records are not vouched for yet");
  Cli::add_json_flag(verify_cmd, v->json);
}

}  // namespace keysvcctl
