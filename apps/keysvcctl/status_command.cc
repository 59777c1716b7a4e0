// status: which module and token the config names, whether login works, and the ring.
#include <iostream>

#include "cli.h"
#include "keysvc/key_name.h"
#include "keysvc/token_store.h"
#include "output.h"

namespace keysvcctl {

namespace {

int status(const Cli& cli, bool json) {
  keysvc::Config config;
  auto pool = cli.open_pool(&config);  // throws unless the token is found and login works
  keysvc::hsm::TokenInfo info = pool->token().info();
  keysvc::KeyRing ring = pool->run([](keysvc::hsm::Session& s) { return keysvc::token_store::load(s); });
  const keysvc::Generation* active = ring.encrypt_generation();
  const std::string& module = pool->token().module()->path();

  if (json) {
    Json token;
    token.set("uri", config.hsm.token_uri);
    token.set("label", info.label);
    token.set("serial", info.serial);
    token.set("model", info.model);
    token.set("manufacturer", info.manufacturer);
    Json j;
    j.set("config", cli.config_path_view());
    j.set("module", module);
    j.set("token", std::move(token));
    j.set("login", true);
    j.set("generations", static_cast<std::int64_t>(ring.generations().size()));
    j.set("encrypt_generation", active ? Json(keysvc::to_hex(active->name)) : Json());
    j.set("encrypt_generation_created", active ? Json(iso8601_utc(active->created)) : Json());
    std::cout << j.dump() << '\n';
    return kExitOk;
  }
  Table t({"config", cli.config_path_view()});
  t.add({"module", module});
  t.add({"token", info.label + " (serial " + info.serial + ", model " + info.model + ", " + info.manufacturer + ")"});
  t.add({"login", "ok"});
  t.add({"generations", std::to_string(ring.generations().size())});
  t.add({"encrypting", active ? keysvc::to_hex(active->name) + " (created " + iso8601_utc(active->created) + ")"
                              : "(none: the first server start creates one, or run 'keys generate')"});
  t.print(std::cout);
  return kExitOk;
}

}  // namespace

void add_status_command(Cli& cli) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = cli.add_command(
      "status", "Check the config, the token and the login; show the key ring's state",
      [&cli, json] { return status(cli, *json); });
  Cli::add_json_flag(cmd, *json);
}

}  // namespace keysvcctl
