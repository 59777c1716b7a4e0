// Shared by the libFuzzer targets in fuzz/ (docs/FUZZING.md, "Fuzzing").
//
// The ticket targets run against the real thing: a SoftHSM token made for the fuzzing
// process (tests/support/test_token.h), a TicketKeyService on it, and an OpenSSL server
// SSL_CTX with the keysvc adapter installed (tests/support/tls_pair.h).
//
// Key names: a token made for this process has fresh random generation names, so the
// committed seeds carry the placeholder name kSeedKeyName wherever a ticket names its
// generation, and every input has that placeholder replaced by the live encrypt
// generation's name before it reaches OpenSSL. A seed ticket then passes the key-name
// lookup and costs two HMACs in the token, as a forged ticket under a real (public) key
// name does; its MAC was made under another token's keys and fails, as an attacker's
// does. A ticket the fuzzer makes can never resume: each target aborts if one does.
//
// Writing seeds: with KEYSVC_FUZZ_WRITE_SEEDS=DIR a target writes its seed inputs to DIR
// from real handshakes / real logs and exits (fuzz/make_seeds.sh).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "keysvc/key_name.h"
#include "keysvc/ticket_key_service.h"
#include "tls_pair.h"

namespace keysvc::fuzz {

using Bytes = std::vector<std::uint8_t>;

// The 16-byte key name the committed seeds carry instead of a live generation's name.
inline constexpr char kSeedKeyName[] = "keysvc-fuzz-name";
static_assert(sizeof kSeedKeyName - 1 == sizeof(KeyName));
KeyName seed_key_name();

// The token, service and server context for the ticket targets, made on first use.
struct TicketServer {
  std::shared_ptr<TicketKeyService> service;
  test::SslCtxPtr server;
  KeyName name{};  // the live encrypt generation
};
TicketServer& ticket_server();

// Replaces every occurrence of `from` in `bytes` by `to`.
void replace_name(Bytes& bytes, const KeyName& from, const KeyName& to);

// A real client session holding a ticket from ticket_server(), for TLS1_2_VERSION or
// TLS1_3_VERSION (made once per version).
SSL_SESSION* template_session(int version);

// The folder named by KEYSVC_FUZZ_WRITE_SEEDS, or "" when fuzzing.
std::string seed_dir();
// Writes one seed file DIR/NAME.
void write_seed(const std::string& dir, const std::string& name, const Bytes& bytes);
void write_seed(const std::string& dir, const std::string& name, const std::string& text);

// Prints `what` and aborts: an invariant broken, a finding for libFuzzer.
[[noreturn]] void fail(const std::string& what);

}  // namespace keysvc::fuzz
