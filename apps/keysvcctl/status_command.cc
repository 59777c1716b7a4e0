// status: which module and token the config names, whether login works, and the ring:
// generations by state, and what the clock picks now and next.
#include <algorithm>
#include <array>
#include <iostream>

#include "cli.h"
#include "keysvc/key_name.h"
#include "keysvc/token_store.h"
#include "output.h"

namespace keysvcctl {

namespace {

constexpr std::array kStates = {keysvc::GenerationState::kPending, keysvc::GenerationState::kActive,
                                keysvc::GenerationState::kDecryptOnly, keysvc::GenerationState::kExpired,
                                keysvc::GenerationState::kRevoked, keysvc::GenerationState::kRefused};

// The generation that will take over from the current one: the usable generation with
// the earliest encrypt_from after now (ties: smallest name, as KeyRing orders them),
// i.e. what KeyRing::encrypt_generation picks at that time if nothing changes.
const keysvc::Generation* next_generation(const keysvc::KeyRing& ring, std::int64_t now) {
  for (const auto& g : ring.generations())  // ascending (encrypt_from, name)
    if (g.usable() && g.schedule.encrypt_from > now) return &g;
  return nullptr;
}

// The end of the latest encrypt window of a usable generation: until when the ring has
// a planned encrypt generation (0 if none).
std::int64_t covered_until(const keysvc::KeyRing& ring) {
  std::int64_t until = 0;
  for (const auto& g : ring.generations())
    if (g.usable()) until = std::max(until, g.schedule.encrypt_until);
  return until;
}

int status(const Cli& cli, bool json) {
  keysvc::Config config;
  auto gateway = cli.open_gateway(&config);  // throws unless the token is found and login works
  keysvc::hsm::TokenInfo info = gateway->token().info();
  keysvc::KeyRing ring = gateway->call(
      [rule = keysvc::custody_rule_of(config)](keysvc::hsm::Session& s) { return keysvc::token_store::load(s, rule); });
  const std::int64_t now = unix_now();
  const keysvc::Generation* active = ring.encrypt_generation(now);
  const keysvc::Generation* next = next_generation(ring, now);
  const std::int64_t covered = covered_until(ring);
  const std::string& module = gateway->token().module()->path();
  std::array<std::int64_t, kStates.size()> counts{};
  for (const auto& g : ring.generations()) {
    auto state = ring.state(g, now);
    for (std::size_t k = 0; k < kStates.size(); ++k)
      if (kStates[k] == state) ++counts[k];
  }

  if (json) {
    Json token;
    token["uri"] = config.hsm.token_uri.text();
    token["label"] = info.label;
    token["serial"] = info.serial;
    token["model"] = info.model;
    token["manufacturer"] = info.manufacturer;
    Json states;
    for (std::size_t k = 0; k < kStates.size(); ++k) states[std::string(keysvc::to_string(kStates[k]))] = counts[k];
    Json j;
    j["config"] = cli.config_path_view();
    j["module"] = module;
    j["token"] = std::move(token);
    j["login"] = true;
    j["now"] = iso8601_utc(now);
    j["now_unix"] = now;
    j["generations"] = static_cast<std::int64_t>(ring.generations().size());
    j["states"] = std::move(states);
    j["encrypt_generation"] = active ? Json(keysvc::to_hex(active->name)) : Json();
    j["encrypt_from"] = active ? Json(iso8601_utc(active->schedule.encrypt_from)) : Json();
    j["encrypt_from_unix"] = active ? Json(active->schedule.encrypt_from) : Json();
    j["next_generation"] = next ? Json(keysvc::to_hex(next->name)) : Json();
    j["next_encrypt_from"] = next ? Json(iso8601_utc(next->schedule.encrypt_from)) : Json();
    j["next_encrypt_from_unix"] = next ? Json(next->schedule.encrypt_from) : Json();
    j["covered_until"] = covered ? Json(iso8601_utc(covered)) : Json();
    j["covered_until_unix"] = covered ? Json(covered) : Json();
    std::cout << dump_pretty(j) << '\n';
    return kExitOk;
  }
  std::string by_state;
  for (std::size_t k = 0; k < kStates.size(); ++k)
    if (counts[k]) by_state += (by_state.empty() ? "" : ", ") + std::to_string(counts[k]) + " " +
                               std::string(keysvc::to_string(kStates[k]));
  Table t({"config", cli.config_path_view()});
  t.add({"module", module});
  t.add({"token", info.label + " (serial " + info.serial + ", model " + info.model + ", " + info.manufacturer + ")"});
  t.add({"login", "ok"});
  t.add({"now", iso8601_utc(now)});
  t.add({"generations", std::to_string(ring.generations().size()) + (by_state.empty() ? "" : " (" + by_state + ")")});
  t.add({"encrypting", active ? keysvc::to_hex(active->name) + " (since " + iso8601_utc(active->schedule.encrypt_from) + ")"
                              : "(none: run 'keysvcctl rotate', or start a server that rotates for itself)"});
  t.add({"next", next ? keysvc::to_hex(next->name) + " (from " + iso8601_utc(next->schedule.encrypt_from) + ")"
                      : "(none scheduled yet)"});
  t.add({"covered until", covered ? iso8601_utc(covered) : "(nothing)"});
  t.print(std::cout);
  return kExitOk;
}

}  // namespace

void add_status_command(Cli& cli) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = cli.add_command(
      "status",
      "Check the config, the token and the login; show the generations by state, the encrypt generation "
      "now and the next one with its start time. Changes nothing",
      [&cli, json] { return status(cli, *json); });
  Cli::add_json_flag(cmd, *json);
}

}  // namespace keysvcctl
