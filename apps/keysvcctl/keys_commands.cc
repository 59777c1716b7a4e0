// keys list, keys generate.
#include <algorithm>
#include <chrono>
#include <iostream>

#include "cli.h"
#include "keysvc/key_name.h"
#include "keysvc/token_store.h"
#include "output.h"

namespace keysvcctl {

namespace {

struct ListedGeneration {
  keysvc::Generation generation;
  bool active = false;
  keysvc::token_store::GenerationCustody custody;
};

// Every generation, newest first, with its custody attributes.
std::vector<ListedGeneration> list_generations(keysvc::hsm::SessionPool& pool) {
  return pool.run([](keysvc::hsm::Session& s) {
    keysvc::KeyRing ring = keysvc::token_store::load(s);
    const keysvc::Generation* active = ring.encrypt_generation();
    std::vector<ListedGeneration> out;
    for (const auto& g : ring.generations())
      out.push_back({g, active && active->name == g.name, keysvc::token_store::read_custody(s, g)});
    std::reverse(out.begin(), out.end());
    return out;
  });
}

std::string custody_text(const keysvc::token_store::GenerationCustody& c) {
  std::string enc = custody_summary(c.enc), mac = custody_summary(c.mac);
  if (enc == mac) return enc;
  return "enc: " + enc + "; mac: " + mac;
}

int keys_list(const Cli& cli, bool json) {
  auto pool = cli.open_pool();
  auto generations = list_generations(*pool);
  if (json) {
    Json array{Json::Array{}};
    for (const auto& l : generations) {
      Json j;
      j.set("name", keysvc::to_hex(l.generation.name));
      j.set("created", iso8601_utc(l.generation.created));
      j.set("created_unix", l.generation.created);
      j.set("state", l.active ? "active" : "decrypt-only");
      j.set("active", l.active);
      j.set("enc_key", custody_json(l.custody.enc));
      j.set("mac_key", custody_json(l.custody.mac));
      array.push(std::move(j));
    }
    std::cout << array.dump() << '\n';
    return kExitOk;
  }
  if (generations.empty()) return kExitOk;
  Table table({"NAME", "CREATED", "STATE", "CUSTODY"});
  for (const auto& l : generations) {
    table.add({keysvc::to_hex(l.generation.name), iso8601_utc(l.generation.created),
               l.active ? "active" : "decrypt-only", custody_text(l.custody)});
  }
  table.print(std::cout);
  return kExitOk;
}

int keys_generate(const Cli& cli, bool json) {
  auto pool = cli.open_pool();
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  keysvc::Generation g = pool->run([now](keysvc::hsm::Session& s) {
    // The ring orders generations by creation second, then by name: a generation made in
    // the same second as the newest one would only become the encrypt generation if its
    // random name sorted higher. One second later than the newest makes it encrypt.
    keysvc::KeyRing ring = keysvc::token_store::load(s);
    std::int64_t created = now;
    if (const keysvc::Generation* newest = ring.encrypt_generation())
      created = std::max(created, newest->created + 1);
    return keysvc::token_store::create_generation(s, created);
  });
  if (json) {
    Json j;
    j.set("name", keysvc::to_hex(g.name));
    j.set("created", iso8601_utc(g.created));
    j.set("created_unix", g.created);
    std::cout << j.dump() << '\n';
  } else {
    std::cout << keysvc::to_hex(g.name) << '\n';
  }
  return kExitOk;
}

}  // namespace

void add_keys_commands(Cli& cli) {
  CLI::App* keys = cli.add_group("keys", "Ticket key generations in the token");

  auto list_json = std::make_shared<bool>(false);
  CLI::App* list = cli.add_command(
      "list", "List every generation: name, creation time, state and the keys' HSM attributes",
      [&cli, list_json] { return keys_list(cli, *list_json); }, keys);
  Cli::add_json_flag(list, *list_json);

  auto gen_json = std::make_shared<bool>(false);
  CLI::App* generate = cli.add_command(
      "generate",
      "Create a new generation in the token and print its name. It becomes the newest "
      "generation (created at least a second after the previous one), which servers encrypt new "
      "tickets under once they rescan the token",
      [&cli, gen_json] { return keys_generate(cli, *gen_json); }, keys);
  Cli::add_json_flag(generate, *gen_json);
}

}  // namespace keysvcctl
