// Fuzz target: a whole TLS ClientHello (records as a client sends them, usually carrying
// a session ticket) fed to a real server SSL with keysvc's ticket adapter installed on a
// real SoftHSM token. Reaches OpenSSL's ClientHello parsing, the ticket callback, the
// provider KDF (key-name lookup, unknown-name rescans, derivation in the token) and the
// MAC / decrypt failure paths. See fuzz_support.h for the seed key-name placeholder.
//
// Invariant: a ClientHello the fuzzer made never resumes a session.
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdint>

#include "fuzz_support.h"

using namespace keysvc;
using namespace keysvc::fuzz;

namespace {

// The first flight a client with `resume` (or none) sends.
Bytes client_hello(int version, SSL_SESSION* resume) {
  auto ctx = test::make_client_ctx(version);
  SSL* ssl = SSL_new(ctx.get());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_tlsext_host_name(ssl, "localhost");
  if (resume != nullptr) SSL_set_session(ssl, resume);
  SSL_connect(ssl);  // wants to read the server's answer
  char* data = nullptr;
  long n = BIO_get_mem_data(out, &data);
  Bytes hello(data, data + n);
  SSL_free(ssl);
  return hello;
}

void write_seeds(const std::string& dir) {
  TicketServer& s = ticket_server();
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    std::string v = version == TLS1_3_VERSION ? "tls13" : "tls12";
    Bytes fresh = client_hello(version, nullptr);
    write_seed(dir, v + "-no-ticket", fresh);
    SSL_SESSION* session = template_session(version);
    Bytes hello = client_hello(version, session);
    replace_name(hello, s.name, seed_key_name());
    write_seed(dir, v + "-ticket", hello);
    // Tickets OpenSSL refuses before the callback (shorter than name + IV), an unknown
    // name, and one cut inside the ciphertext.
    Bytes ticket = test::ticket_of(session);
    for (std::size_t len : {std::size_t{0}, std::size_t{20}, std::size_t{48}, ticket.size() - 40}) {
      Bytes cut(ticket.begin(), ticket.begin() + static_cast<long>(len));
      auto forged = test::with_ticket(session, cut);
      Bytes h = client_hello(version, forged.get());
      replace_name(h, s.name, seed_key_name());
      write_seed(dir, v + "-ticket-len" + std::to_string(len), h);
    }
    Bytes unknown = ticket;
    for (std::size_t i = 0; i < 16; ++i) unknown[i] ^= 0x5a;
    auto forged = test::with_ticket(session, unknown);
    write_seed(dir, v + "-ticket-unknown-name", client_hello(version, forged.get()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::string dir = seed_dir(); !dir.empty()) {
    write_seeds(dir);
    std::exit(0);
  }
  ticket_server();
  template_session(TLS1_3_VERSION);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  TicketServer& s = ticket_server();
  Bytes input(data, data + size);
  replace_name(input, seed_key_name(), s.name);

  SSL* ssl = SSL_new(s.server.get());
  BIO* in = BIO_new_mem_buf(input.data(), static_cast<int>(input.size()));
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_accept_state(ssl);
  SSL_do_handshake(ssl);
  bool resumed = SSL_session_reused(ssl) == 1;
  SSL_free(ssl);
  ERR_clear_error();
  if (resumed) fail("a fuzzed ClientHello resumed a session");
  return 0;
}
