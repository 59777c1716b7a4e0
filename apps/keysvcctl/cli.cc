#include "cli.h"

#include <chrono>

#include "keysvc/audit_trail.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/ticket_key_service.h"

namespace keysvcctl {

namespace {
std::string command_path(const CLI::App* app) {
  std::string path;
  for (; app != nullptr && app->get_parent() != nullptr; app = app->get_parent())
    path = app->get_name() + (path.empty() ? "" : " " + path);
  return path;
}
}  // namespace

CLI::App* Cli::add_group(const std::string& name, const std::string& description, CLI::App* parent) {
  CLI::App* group = (parent ? parent : &root_)->add_subcommand(name, description);
  group->require_subcommand(1);
  return group;
}

CLI::App* Cli::add_command(const std::string& name, const std::string& description, Action action,
                           CLI::App* parent) {
  CLI::App* command = (parent ? parent : &root_)->add_subcommand(name, description);
  command->callback([this, command, action = std::move(action)] {
    selected_ = action;
    selected_name_ = command_path(command);
  });
  return command;
}

CLI::Option* Cli::add_json_flag(CLI::App* command, bool& json) {
  return command->add_flag("--json", json, "Print JSON instead of text");
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void check_uri_label(const std::string& label, const std::string& option) {
  if (label.empty() || label.size() > 32) throw UsageError(option + " must be 1 to 32 characters");
  for (char c : label) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == '~';
    if (!ok) throw UsageError(option + " may only contain letters, digits, '-', '_', '.' and '~'");
  }
}

keysvc::Config Cli::load_config() const {
  if (config_path_.empty()) throw UsageError("this command needs --config FILE");
  if (!pin_source_.empty()) {
    try {
      (void)keysvc::hsm::PinSource::parse(pin_source_);
    } catch (const keysvc::ConfigError& e) {
      throw UsageError(std::string("--pin-source: ") + e.what());
    }
  }
  keysvc::Config config = keysvc::Config::load_file(config_path_);
  if (!pin_source_.empty()) config.hsm.pin_source = pin_source_;
  return config;
}

std::unique_ptr<keysvc::TokenGateway> Cli::open_gateway(keysvc::Config* loaded, AuditFile audit) const {
  keysvc::Config config = load_config();
  std::unique_ptr<keysvc::TokenGateway> gateway;
  try {
    gateway = keysvc::TokenGateway::open(config);
  } catch (const keysvc::hsm::Pkcs11Error& e) {
    if (keysvc::audit::is_login_failure(e.rv()))
      keysvc::audit::record_login_failure(config, keysvc::audit::Writer::kTool, keysvc::hsm::rv_name(e.rv()));
    throw;
  }
  if (audit == AuditFile::kSealPending) keysvc::audit::seal_pending_records(config, keysvc::audit::Writer::kTool, *gateway);
  if (loaded) *loaded = std::move(config);
  return gateway;
}

}  // namespace keysvcctl
