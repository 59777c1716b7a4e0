// The callbacks keysvc sets on an SSL_CTX (install(), ticket_adapter.cc).
//
// Path of a ticket: OpenSSL -> ticket_key_cb -> EVP_KDF_derive on KEYSVC-TICKET-KDF
// (ticket_kdf.cc) -> TicketKeyService (keysvc/) -> the epoch key or two HMACs in the
// token (hsm/). The per-ticket key bytes exist in ticket_callbacks.cc only between the
// KDF call and the EVP initialisation, in secure memory wiped on every path.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>

namespace keysvc::openssl {

// SSL_CTX_set_tlsext_ticket_key_evp_cb: enc=1 sets up a new ticket's keys (1, or 0 for
// no ticket this time); enc=0 opens a presented ticket (1 use, 2 use and renew, 0 full
// handshake; never -1: an HSM problem must not abort the handshake).
int ticket_key_cb(SSL* s, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx,
                  int enc);

// SSL_CTX_set_session_ticket_cb, with the SSL_CTX's AdapterState as `arg`: stamps keysvc's
// app-data record into each ticket, and checks and counts it in each decrypted one.
int generate_app_data_cb(SSL* s, void* arg);
SSL_TICKET_RETURN decrypt_app_data_cb(SSL* s, SSL_SESSION* session, const unsigned char* keyname,
                                      std::size_t keyname_len, SSL_TICKET_STATUS status, void* arg);

// SSL_CTX_set_info_callback: keysvc's count of the handshakes that really resumed;
// chained_info_cb calls the server's own callback (AdapterState::previous_info_cb) first.
void info_cb(const SSL* s, int where, int ret);
void chained_info_cb(const SSL* s, int where, int ret);

}  // namespace keysvc::openssl
