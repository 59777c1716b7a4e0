// The `static` mode: a session ticket callback with fixed in-memory keys, the way nginx
// uses ssl_session_ticket_key files (ngx_ssl_ticket_key_callback): a 16-byte key name,
// an AES-256-CBC key and an HMAC-SHA256 key held in process memory, a fresh random IV
// per ticket, and no per-ticket derivation. The baseline keysvc replaces.
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <cstdint>

namespace keysvc::bench {

struct StaticTicketKey {
  std::array<unsigned char, 16> name{};
  std::array<unsigned char, 32> aes_key{};
  std::array<unsigned char, 32> hmac_key{};
  EVP_CIPHER* cipher = nullptr;  // AES-256-CBC, fetched once
};

// Random keys (like a freshly generated 80-byte nginx key file) and the cipher.
StaticTicketKey* new_static_key();
void free_static_key(StaticTicketKey* key);

// The evp callback itself (exposed for the micro-benchmark). Uses the key stored by
// install_static_tickets on the SSL's SSL_CTX, or `key` when called directly.
int static_ticket_setup(const StaticTicketKey& key, unsigned char key_name[16], unsigned char* iv,
                        EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc);

// Installs the callback on `ctx`; `ctx` owns the key afterwards.
void install_static_tickets(SSL_CTX* ctx);

}  // namespace keysvc::bench
