#include "fuzz_support.h"

#include <openssl/err.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "keysvc/openssl/ticket_adapter.h"
#include "test_token.h"

namespace keysvc::fuzz {

KeyName seed_key_name() {
  KeyName n{};
  std::memcpy(n.data(), kSeedKeyName, n.size());
  return n;
}

void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what.c_str());
  std::abort();
}

TicketServer& ticket_server() {
  static TicketServer* server = [] {
    auto* s = new TicketServer();
    Config config = test::TestToken::get().config();
    config.log_level = "off";  // every forged ticket would log a line
    config.tickets.issue_pool = 0;
    s->service = TicketKeyService::open(config);
    auto name = s->service->encrypt_key_name();
    if (!name) fail("no encrypt generation on the fuzz token");
    s->name = *name;
    s->server = test::make_server_ctx();
    openssl::install(s->server.get(), s->service);
    return s;
  }();
  return *server;
}

void replace_name(Bytes& bytes, const KeyName& from, const KeyName& to) {
  if (bytes.size() < from.size()) return;
  for (std::size_t i = 0; i + from.size() <= bytes.size(); ++i) {
    if (std::memcmp(bytes.data() + i, from.data(), from.size()) == 0) {
      std::memcpy(bytes.data() + i, to.data(), to.size());
      i += from.size() - 1;
    }
  }
}

SSL_SESSION* template_session(int version) {
  static test::SessionPtr sessions[2];
  auto& slot = sessions[version == TLS1_3_VERSION ? 1 : 0];
  if (!slot) {
    auto client = test::make_client_ctx(version);
    test::Handshake h = test::handshake(ticket_server().server.get(), client.get());
    if (!h.ok || h.last() == nullptr) fail("no ticket from a real handshake: " + h.error);
    // The harness is wired if a real ticket resumes.
    test::Handshake again = test::handshake(ticket_server().server.get(), client.get(), h.last());
    if (!again.ok || !again.reused) fail("a real ticket did not resume: " + again.error);
    SSL_SESSION_up_ref(h.last());
    slot.reset(h.last());
  }
  return slot.get();
}

std::string seed_dir() {
  const char* dir = std::getenv("KEYSVC_FUZZ_WRITE_SEEDS");
  return dir != nullptr ? dir : "";
}

void write_seed(const std::string& dir, const std::string& name, const Bytes& bytes) {
  std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) fail("cannot write seed " + dir + "/" + name);
}

void write_seed(const std::string& dir, const std::string& name, const std::string& text) {
  write_seed(dir, name, Bytes(text.begin(), text.end()));
}

}  // namespace keysvc::fuzz
