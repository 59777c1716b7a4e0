// keysvcctl: manage keysvc's PKCS#11 token and ticket key generations.
//
//   keysvcctl token init --module PATH --label LABEL --pin-source SRC --so-pin-source SRC
//   keysvcctl --config FILE keys list [--json]
//   keysvcctl --config FILE keys generate [--json]
//   keysvcctl --config FILE keys revoke NAME [--json]
//   keysvcctl --config FILE keys destroy NAME [--json]
//   keysvcctl --config FILE rotate [--every DURATION] [--json]   (also: keys rotate)
//   keysvcctl --config FILE status [--json]
//   keysvcctl --config FILE doctor [--json]
//
// Exit codes: 0 ok, 1 failure, 2 usage. Errors: one line on stderr. See cli.h.
#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "keysvc/hsm/error.h"
#include "keysvc/log.h"

namespace {

using keysvcctl::Cli;

void add_rotate(Cli& cli) { keysvcctl::add_rotate_command(cli); }

// Every command group; later groups (audit) are added here.
constexpr void (*kCommandGroups[])(Cli&) = {
    keysvcctl::add_status_command,
    keysvcctl::add_doctor_command,
    keysvcctl::add_keys_commands,
    add_rotate,
    keysvcctl::add_token_commands,
    keysvcctl::add_audit_commands,
    keysvcctl::add_server_key_commands,
};

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int fail(int code, const std::string& context, const std::string& message) {
  std::cerr << "keysvcctl: " << (context.empty() ? "" : context + ": ") << one_line(message) << std::endl;
  return code;
}

// The deepest subcommand the user named, for "see 'keysvcctl keys --help'".
const CLI::App* deepest_parsed(const CLI::App* app) {
  for (const CLI::App* sub : app->get_subcommands())
    if (sub->parsed()) return deepest_parsed(sub);
  return app;
}

std::string help_hint(const CLI::App& root) {
  std::string path;
  for (const CLI::App* a = deepest_parsed(&root); a && a->get_parent(); a = a->get_parent())
    path = a->get_name() + " " + path;
  return " (see 'keysvcctl " + path + "--help')";
}

// CLI11's own messages for unexpected arguments repeat them; a stray argument may be a
// PIN typed on the command line, so only option names are shown.
std::string extras_message(const CLI::App& root) {
  const CLI::App* where = deepest_parsed(&root);
  std::vector<std::string> extras = root.remaining(true);
  std::string options;
  std::size_t values = 0;
  for (const auto& e : extras) {
    if (e.size() > 1 && e[0] == '-') {
      options += (options.empty() ? "" : ", ") + e.substr(0, e.find('='));
    } else {
      ++values;
    }
  }
  auto subs = where->get_subcommands([](const CLI::App*) { return true; });
  std::string msg;
  if (!options.empty()) msg = "unknown option(s) " + options;
  if (values > 0 && options.empty() && !subs.empty()) {
    msg = "unknown command";
  } else if (values > 0) {
    if (!msg.empty()) msg += " and ";
    msg += std::to_string(values) + " unexpected value(s) (not shown)";
  }
  if (msg.empty()) msg = "unexpected arguments";
  if (!subs.empty()) {
    msg += "; commands are";
    for (std::size_t k = 0; k < subs.size(); ++k) msg += (k ? ", " : " ") + subs[k]->get_name();
  }
  return msg;
}

// CLI11's messages, in keysvcctl's words: lower case, "command" for "subcommand".
std::string usage_message(std::string s) {
  for (std::size_t at; (at = s.find("subcommand")) != std::string::npos;) s.replace(at, 10, "command");
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z' && !(s.size() > 1 && s[1] >= 'A' && s[1] <= 'Z'))
    s[0] = static_cast<char>(s[0] - 'A' + 'a');
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  keysvc::set_log_level("warn");
  // A network HSM's client module (p11-kit-client.so) writes each call to a socket: if the
  // HSM end goes away, that write raises SIGPIPE, which would kill keysvcctl silently
  // (exit 141) instead of failing the call, and `rotate --every` would not log and retry.
  // Ignored, the call fails with an error; so does a write to a closed stdout ("cannot
  // write output", exit 1).
  ::signal(SIGPIPE, SIG_IGN);

  CLI::App app("keysvcctl: manage keysvc's ticket key token (long-term keys held in a PKCS#11 token)",
               "keysvcctl");
  app.set_version_flag("--version", "keysvcctl 0.1.0");
  app.require_subcommand(1);
  app.fallthrough();  // --config may also follow the command
  Cli cli(app);
  app.add_option("-c,--config", cli.config_path(), "keysvc config file (TOML; see keysvc/config.h)")
      ->type_name("FILE");
  app.add_option("--pin-source", cli.pin_source(),
                 "PIN source replacing the config's: file:PATH or env:NAME (e.g. file:%d/pin with systemd's "
                 "LoadCredential=pin:...)")
      ->type_name("SRC");
  app.footer("Exit codes: 0 ok, 1 failure, 2 usage. PINs are read from file:PATH or env:NAME, never argv.");
  for (auto add : kCommandGroups) add(cli);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help / --version on stdout, exit 0
  } catch (const CLI::ExtrasError&) {
    return fail(keysvcctl::kExitUsage, "", extras_message(app) + help_hint(app));
  } catch (const CLI::RequiredError& e) {
    // "keys lst": CLI11 reports the missing subcommand; the stray word is the real problem.
    if (!app.remaining(true).empty()) return fail(keysvcctl::kExitUsage, "", extras_message(app) + help_hint(app));
    return fail(keysvcctl::kExitUsage, "", usage_message(e.what()) + help_hint(app));
  } catch (const CLI::ParseError& e) {
    return fail(keysvcctl::kExitUsage, "", usage_message(e.what()) + help_hint(app));
  }

  const std::string& command = cli.selected_name();
  if (!cli.selected()) return fail(keysvcctl::kExitUsage, "", "no command given" + help_hint(app));
  try {
    int rc = cli.selected()();
    std::cout.flush();
    if (!std::cout) return fail(keysvcctl::kExitFailure, command, "cannot write output");
    return rc;
  } catch (const keysvcctl::UsageError& e) {
    return fail(keysvcctl::kExitUsage, command, e.what() + help_hint(app));
  } catch (const keysvc::hsm::Error& e) {  // ConfigError, Pkcs11Error
    return fail(keysvcctl::kExitFailure, command, e.what());
  } catch (const std::exception& e) {
    return fail(keysvcctl::kExitFailure, command, e.what());
  }
}
