// Fuzz target: the ticket bytes alone, presented by a real client in an otherwise valid
// TLS handshake (in memory) to a server with keysvc's adapter on a real SoftHSM token:
// the adapter's ticket callback, the provider KDF's open path (key-name and IV handling,
// derivation in the token), OpenSSL's MAC check and decryption, and the app-data check.
//
// Input: one byte choosing TLS 1.2 (even) or TLS 1.3 (odd), then the ticket.
// Invariant: a ticket the fuzzer made never resumes a session.
#include <openssl/err.h>

#include <cstdint>

#include "fuzz_support.h"

using namespace keysvc;
using namespace keysvc::fuzz;

namespace {

void write_seeds(const std::string& dir) {
  TicketServer& s = ticket_server();
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    std::string v = version == TLS1_3_VERSION ? "tls13" : "tls12";
    std::uint8_t selector = version == TLS1_3_VERSION ? 1 : 0;
    Bytes ticket = test::ticket_of(template_session(version));
    replace_name(ticket, s.name, seed_key_name());
    auto seed = [&](const std::string& name, const Bytes& t) {
      Bytes b{selector};
      b.insert(b.end(), t.begin(), t.end());
      write_seed(dir, v + "-" + name, b);
    };
    seed("ticket", ticket);
    seed("name-iv-only", Bytes(ticket.begin(), ticket.begin() + 32));
    seed("no-mac", Bytes(ticket.begin(), ticket.end() - 32));
    seed("empty", {});
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::string dir = seed_dir(); !dir.empty()) {
    write_seeds(dir);
    std::exit(0);
  }
  template_session(TLS1_2_VERSION);
  template_session(TLS1_3_VERSION);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  TicketServer& s = ticket_server();
  int version = (data[0] & 1) != 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
  Bytes ticket(data + 1, data + size);
  replace_name(ticket, seed_key_name(), s.name);

  static test::SslCtxPtr clients[2] = {test::make_client_ctx(TLS1_2_VERSION), test::make_client_ctx(TLS1_3_VERSION)};
  auto session = test::with_ticket(template_session(version), ticket);
  test::Handshake h = test::handshake(s.server.get(), clients[version == TLS1_3_VERSION].get(), session.get());
  ERR_clear_error();
  if (!h.ok) fail("a handshake with a forged ticket failed instead of falling back to a full one: " + h.error);
  if (h.reused) fail("a fuzzed ticket resumed a session");
  return 0;
}
