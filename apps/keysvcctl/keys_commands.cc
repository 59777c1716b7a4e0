// keys list, keys generate, keys revoke, keys destroy (and the "keys rotate" alias of
// rotate, rotate_command.cc).
#include <algorithm>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "cli.h"
#include "key_supply.h"
#include "lifecycle.h"
#include "keysvc/key_name.h"
#include "keysvc/rotation.h"
#include "keysvc/token_store.h"
#include "output.h"

namespace keysvcctl {

namespace {

namespace token_store = keysvc::token_store;

struct ListedGeneration {
  keysvc::Generation generation;
  keysvc::GenerationState state{};
  // Only for generations whose keys are still in the token (a revoked one may have none).
  std::optional<token_store::GenerationCustody> custody;
};

// Every generation, latest encrypt window first, with its state at `now` and its keys'
// custody attributes.
std::vector<ListedGeneration> list_generations(keysvc::TokenGateway& gateway, std::int64_t now,
                                               const keysvc::CustodyRule& rule) {
  return gateway.call([now, rule](keysvc::hsm::Session& s) {
    keysvc::KeyRing ring = token_store::load(s, rule);
    std::vector<ListedGeneration> out;
    for (const auto& g : ring.generations()) {
      ListedGeneration l{g, ring.state(g, now), std::nullopt};
      if (g.has_keys()) l.custody = token_store::read_custody(s, g);
      out.push_back(std::move(l));
    }
    std::reverse(out.begin(), out.end());
    return out;
  });
}

std::string custody_text(const ListedGeneration& l) {
  if (!l.generation.refused.empty()) return "REFUSED, never used: " + l.generation.refused;
  if (!l.custody) return l.generation.revoked ? "keys destroyed" : "no keys";
  std::string enc = custody_summary(l.custody->enc), mac = custody_summary(l.custody->mac);
  if (enc == mac) return enc;
  return "enc: " + enc + "; mac: " + mac;
}

// How the generation's tickets get their keys (docs/TIERS.md): "epoch 300s" (derivation 3,
// the token derives one key per epoch) or "strict v1" / "strict v2" (one HSM operation
// per ticket).
std::string tier_text(const keysvc::Generation& g) {
  if (g.epoch_tier()) return "epoch " + std::to_string(g.epoch_seconds) + "s";
  return "strict v" + std::to_string(g.derivation);
}

// A name given on the command line: exactly 32 hex digits, or a usage error. The
// message does not repeat the value (it might be a PIN pasted in the wrong place).
keysvc::KeyName parse_name(const std::string& text) {
  auto name = keysvc::key_name_from_hex(text);
  if (!name) throw UsageError("NAME must be a generation name, 32 hex digits");
  return *name;
}

int keys_list(const Cli& cli, bool json) {
  keysvc::Config config;
  auto gateway = cli.open_gateway(&config);
  const std::int64_t now = unix_now();
  auto generations = list_generations(*gateway, now, keysvc::custody_rule_of(config));
  if (json) {
    Json array = Json::array();
    for (const auto& l : generations) {
      const keysvc::Generation& g = l.generation;
      Json j;
      j["name"] = keysvc::to_hex(g.name);
      j["state"] = std::string(keysvc::to_string(l.state));
      j["active"] = l.state == keysvc::GenerationState::kActive;
      add_schedule(j, g.schedule);
      j["revoked"] = g.revoked;
      j["revoked_at"] = g.revoked ? Json(iso8601_utc(g.revoked_at)) : Json();
      j["revoked_at_unix"] = g.revoked ? Json(g.revoked_at) : Json();
      j["tier"] = g.epoch_tier() ? "epoch" : "strict";
      j["derivation"] = g.derivation;
      j["epoch_seconds"] = g.epoch_tier() ? Json(g.epoch_seconds) : Json();
      j["has_keys"] = g.has_keys();
      j["refused"] = g.refused.empty() ? Json() : Json(g.refused);
      j["enc_key"] = l.custody ? custody_json(l.custody->enc) : Json();
      j["mac_key"] = l.custody ? custody_json(l.custody->mac) : Json();
      array.push_back(std::move(j));
    }
    std::cout << dump_pretty(array) << '\n';
    return kExitOk;
  }
  if (generations.empty()) return kExitOk;
  Table table({"NAME", "STATE", "TIER", "CREATED", "ENCRYPT_FROM", "ENCRYPT_UNTIL", "DECRYPT_UNTIL", "CUSTODY"});
  for (const auto& l : generations) {
    const keysvc::Schedule& s = l.generation.schedule;
    table.add({keysvc::to_hex(l.generation.name), std::string(keysvc::to_string(l.state)), tier_text(l.generation),
               iso8601_utc(s.created),
               iso8601_utc(s.encrypt_from), iso8601_utc(s.encrypt_until), iso8601_utc(s.decrypt_until),
               custody_text(l)});
  }
  table.print(std::cout);
  return kExitOk;
}

int keys_generate(const Cli& cli, bool json) {
  keysvc::Config config;
  auto gateway = cli.open_gateway(&config);
  const std::int64_t now = unix_now();
  auto reserved = reserve_keys(config, gateway->token(), 1);
  TokenChange change(config, *gateway, now);
  keysvc::Generation g = gateway->call([now, policy = config.rotation, rule = keysvc::custody_rule_of(config)](
                                          keysvc::hsm::Session& s) {
    return token_store::create_generation(s, keysvc::schedule_encrypting_now(token_store::load(s, rule), now, policy),
                                          keysvc::key_options(policy));
  });
  change.commit(now);
  if (json) {
    Json j;
    j["name"] = keysvc::to_hex(g.name);
    add_schedule(j, g.schedule);
    std::cout << dump_pretty(j) << '\n';
  } else {
    std::cout << keysvc::to_hex(g.name) << '\n';
  }
  return kExitOk;
}

int keys_revoke(const Cli& cli, const std::string& name_text, bool json) {
  const keysvc::KeyName name = parse_name(name_text);
  keysvc::Config config;
  auto gateway = cli.open_gateway(&config);
  const std::int64_t now = unix_now();
  auto encrypting = [&]() -> std::optional<keysvc::KeyName> {
    keysvc::KeyRing ring = gateway->call(
        [rule = keysvc::custody_rule_of(config)](keysvc::hsm::Session& s) { return token_store::load(s, rule); });
    const keysvc::Generation* g = ring.encrypt_generation(now);
    return g ? std::optional(g->name) : std::nullopt;
  };
  const bool was_active = encrypting() == name;
  // keysvc::revoke makes the replacement first: if it cannot (a token without the
  // mechanism, no key left), nothing has been revoked and the token still has an
  // encrypting generation.
  auto reserved = reserve_keys(config, gateway->token(), was_active ? 1 : 0);
  TokenChange change(config, *gateway, now);
  if (!keysvc::revoke(*gateway, name, now, config.rotation))
    throw std::runtime_error("no generation " + keysvc::to_hex(name) + " in the token");
  change.commit(now);
  std::optional<keysvc::KeyName> now_encrypting = encrypting();
  if (json) {
    Json j;
    j["revoked"] = keysvc::to_hex(name);
    j["was_active"] = was_active;
    j["encrypt_generation"] = now_encrypting ? Json(keysvc::to_hex(*now_encrypting)) : Json();
    std::cout << dump_pretty(j) << '\n';
  } else {
    std::cout << "revoked " << keysvc::to_hex(name) << '\n';
    if (was_active)
      std::cout << "encrypting under " << (now_encrypting ? keysvc::to_hex(*now_encrypting) : "(none)") << '\n';
  }
  return kExitOk;
}

int keys_destroy(const Cli& cli, const std::string& name_text, bool json) {
  const keysvc::KeyName name = parse_name(name_text);
  keysvc::Config config;
  auto gateway = cli.open_gateway(&config);
  const std::int64_t now = unix_now();
  TokenChange change(config, *gateway, now);
  // (found, was_active)
  auto [found, was_active] = gateway->call([name, now, rule = keysvc::custody_rule_of(config)](keysvc::hsm::Session& s) {
    keysvc::KeyRing ring = token_store::load(s, rule);
    const keysvc::Generation* g = ring.find(name);
    if (g == nullptr) return std::pair{false, false};
    const bool active = ring.encrypt_generation(now) == g;
    token_store::destroy_generation(s, name);
    token_store::drop_revocation(s, name);
    return std::pair{true, active};
  });
  if (!found) throw std::runtime_error("no generation " + keysvc::to_hex(name) + " in the token");
  change.commit(now);
  if (json) {
    Json j;
    j["destroyed"] = keysvc::to_hex(name);
    j["was_active"] = was_active;
    std::cout << dump_pretty(j) << '\n';
  } else {
    std::cout << "destroyed " << keysvc::to_hex(name) << '\n';
    if (was_active)
      std::cout << "it was the encrypt generation: run 'keysvcctl rotate' (or 'keys revoke' next time)\n";
  }
  return kExitOk;
}

}  // namespace

void add_keys_commands(Cli& cli) {
  CLI::App* keys = cli.add_group("keys", "Ticket key generations in the token");

  auto list_json = std::make_shared<bool>(false);
  CLI::App* list = cli.add_command(
      "list",
      "List every generation (latest encrypt window first): name, state (pending, active, decrypt-only, "
      "expired, revoked), schedule (UTC) and the keys' HSM attributes. Changes nothing",
      [&cli, list_json] { return keys_list(cli, *list_json); }, keys);
  Cli::add_json_flag(list, *list_json);

  auto gen_json = std::make_shared<bool>(false);
  CLI::App* generate = cli.add_command(
      "generate",
      "Create a generation that encrypts from now for one rotation.encrypt_period and print its name. "
      "If the current encrypt generation started this very second, the new one starts a second later "
      "so that it is the one picked. Generations the rotator scheduled still take over at their start",
      [&cli, gen_json] { return keys_generate(cli, *gen_json); }, keys);
  Cli::add_json_flag(generate, *gen_json);

  add_rotate_command(cli, keys);

  struct NamedOptions {
    std::string name;
    bool json = false;
  };
  auto revoke = std::make_shared<NamedOptions>();
  CLI::App* revoke_cmd = cli.add_command(
      "revoke",
      "Revoke a generation: servers stop using it at their next token rescan, its keys are destroyed, "
      "and if it was the encrypt generation a replacement that encrypts from now is created",
      [&cli, revoke] { return keys_revoke(cli, revoke->name, revoke->json); }, keys);
  revoke_cmd->add_option("NAME", revoke->name, "Generation name (32 hex digits, see 'keys list')")->required();
  Cli::add_json_flag(revoke_cmd, revoke->json);

  auto destroy = std::make_shared<NamedOptions>();
  CLI::App* destroy_cmd = cli.add_command(
      "destroy",
      "Destroy a generation's keys and records at once, without a revocation record. Tickets under it "
      "can no longer be resumed. Prefer 'keys revoke'; expired generations are destroyed by 'rotate'",
      [&cli, destroy] { return keys_destroy(cli, destroy->name, destroy->json); }, keys);
  destroy_cmd->add_option("NAME", destroy->name, "Generation name (32 hex digits, see 'keys list')")->required();
  Cli::add_json_flag(destroy_cmd, destroy->json);
}

}  // namespace keysvcctl
