// keysvcctl's command framework.
//
// main.cc builds the root CLI11 app with the global options (--config) and hands a Cli
// to each command group's add_*_commands() function (one .cc file per group). A group
// adds its subcommands to root() and gives each leaf command an Action with on_run();
// the Action of the command given on the command line runs after parsing, inside
// main's error handling. To add a command group (audit...), write its add_*() function
// and list it in kCommandGroups in main.cc.
//
// Exit codes: 0 ok, 1 failure (config, token, PKCS#11), 2 usage; `audit verify` adds
// 3 and 4 (audit_commands.cc). Errors are one line
// on stderr, "keysvcctl: ...". PINs are only ever read from PIN sources (file:PATH or
// env:NAME), never taken from argv, and never printed.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "keysvc/config.h"
#include "keysvc/token_gateway.h"

namespace keysvcctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// A usage problem found after parsing (exit 2), e.g. a command that needs --config
// run without it.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a command does once the command line is parsed; returns the exit code.
using Action = std::function<int()>;

class Cli {
 public:
  explicit Cli(CLI::App& root) : root_(root) {}
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;

  CLI::App& root() noexcept { return root_; }

  // Adds a command group ("keys") or a command under `parent` (default: the root).
  CLI::App* add_group(const std::string& name, const std::string& description, CLI::App* parent = nullptr);
  CLI::App* add_command(const std::string& name, const std::string& description, Action action,
                        CLI::App* parent = nullptr);

  // Adds the standard --json flag to a command whose output is data.
  static CLI::Option* add_json_flag(CLI::App* command, bool& json);

  // The Action of the command that was parsed, if any (set once parsing succeeded).
  const Action& selected() const noexcept { return selected_; }
  // "keys list": the command path of the selected command, for error messages.
  const std::string& selected_name() const noexcept { return selected_name_; }

  // --config FILE, as given.
  std::string& config_path() noexcept { return config_path_; }
  const std::string& config_path_view() const noexcept { return config_path_; }

  // --pin-source SRC, as given: replaces the config's PIN source (hsm.pin and the token
  // URI's pin-source / pin-value). For a process that cannot read the PIN file the
  // config names, e.g. the rotator unit, which gets the PIN through systemd's
  // LoadCredential= (docs/DEPLOYMENT.md).
  std::string& pin_source() noexcept { return pin_source_; }

  // Loads the config named by --config, with --pin-source applied. Throws UsageError
  // if there is none and keysvc::ConfigError if it does not load. Commands that need
  // one call this.
  keysvc::Config load_config() const;

  // What open_gateway() does about keysvcctl's audit file.
  enum class AuditFile {
    kSealPending,  // seal the records a writer without the token left (audit_trail.h)
    kLeave,        // touch nothing (audit verify and report only read the files)
  };
  // Loads the config and opens the token gateway, logged in (keysvc::TokenGateway::open).
  // A failed login is recorded in keysvcctl's audit file; a command that reaches the
  // token seals what earlier commands could not (kSealPending). Never creates generations.
  std::unique_ptr<keysvc::TokenGateway> open_gateway(keysvc::Config* loaded = nullptr,
                                                     AuditFile audit = AuditFile::kSealPending) const;

 private:
  CLI::App& root_;
  std::string config_path_;
  std::string pin_source_;
  Action selected_;
  std::string selected_name_;
};

// Token and object labels are used unescaped in PKCS#11 URIs (pkcs11:token=LABEL,
// object=LABEL), so they are limited to URI-safe characters: 1 to 32 letters, digits,
// '-', '_', '.', '~'. Throws UsageError naming `option`.
void check_uri_label(const std::string& label, const std::string& option = "--label");

// The wall clock in Unix seconds: the `now` every schedule decision is made at.
std::int64_t unix_now();

// Command groups (one file each).
void add_token_commands(Cli& cli);   // token_commands.cc: token init
void add_keys_commands(Cli& cli);    // keys_commands.cc: keys list, generate, revoke, destroy (+ keys rotate)
void add_status_command(Cli& cli);   // status_command.cc: status
void add_doctor_command(Cli& cli);   // doctor_command.cc: doctor (doctor.h)
void add_audit_commands(Cli& cli);   // audit_commands.cc: audit verify, audit report
void add_audit_verify_command(Cli& cli, CLI::App* group);  // audit_verify_command.cc: audit verify
void add_server_key_commands(Cli& cli);  // server_key_commands.cc: server-key create (TLS key + certificate)
// rotate_command.cc: "rotate" under `parent` (the root, or "keys" for the alias).
void add_rotate_command(Cli& cli, CLI::App* parent = nullptr);

}  // namespace keysvcctl
