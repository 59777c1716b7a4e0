// keysvc for any OpenSSL 3 server: one call puts HSM-backed session tickets on an
// SSL_CTX.
//
// install() registers an in-process provider ("keysvc-N", OSSL_PROVIDER_add_builtin)
// in the SSL_CTX's library context. The provider offers one algorithm, the KDF
// "KEYSVC-TICKET-KDF" (see ticket_kdf.h), which is the only path from the ticket
// callback to the HSM. Then it sets on the SSL_CTX:
//   - SSL_CTX_set_tlsext_ticket_key_evp_cb: per ticket, asks the KDF for the key name,
//     IV and per-ticket keys, initialises the AES-256-CBC and HMAC-SHA256 contexts
//     (fetched from the same libctx and property query), and wipes the key bytes;
//   - SSL_CTX_set_session_ticket_cb: a small versioned app-data record in every ticket
//     carrying the time of the original full handshake across renewals, so resumption
//     is refused once it is older than tickets.max_session_age;
//   - SSL_CTX_set_num_tickets (TLS 1.3 tickets per full handshake) and
//     SSL_CTX_set_timeout: tickets.lifetime where the SSL_CTX has OpenSSL's default;
//     a timeout the server set itself is kept if shorter and capped at tickets.lifetime
//     if longer, each said in one log line.
//
// install() refuses (one-line std::runtime_error, the SSL_CTX unchanged) an SSL_CTX with
// early data and SSL_OP_NO_ANTI_REPLAY: 0-RTT data under keysvc's tickets could be
// replayed at will. Early data with anti-replay on makes OpenSSL issue stateful TLS 1.3
// tickets that never reach keysvc: allowed, with a warning.
//
// A resumed TLS 1.3 session always gets one fresh ticket (as with OpenSSL's own keys:
// TLS 1.3 clients use each ticket once); a TLS 1.2 ticket is renewed when its
// generation is older than the encrypt generation.
//
// Return values of the ticket callback never abort a handshake because of the HSM:
// an issue failure sends no ticket, an unknown key name or HSM failure on decrypt
// gives a full handshake with fresh tickets.
//
// At most two presented tickets per handshake get keys derived; further PSK identities in
// one ClientHello are refused unopened (counted as over_cap), so a hostile ClientHello
// cannot multiply HSM work.
//
// Per-key usage (keysvc/usage.h): the callbacks report what only OpenSSL sees to
// TicketKeyService::record(): resumed (once the handshake is done), renewed, mac_failure (OpenSSL said NO_DECRYPT after
// keysvc opened the ticket's keys: OpenSSL 3.0 does not tell a bad MAC from bad padding
// or an unparseable session, and checks the MAC first), decrypt_failure (decrypted, but
// keysvc's app-data record is missing or malformed) and max_session_age. The exact rules
// are at decrypt_app_data_cb in ticket_callbacks.cc.
//
// With SNI, OpenSSL uses only the initial SSL_CTX's ticket callbacks: install keysvc on
// that one (installing it on the others too is harmless).
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "keysvc/ticket_key_service.h"

namespace keysvc::openssl {

struct InstallOptions {
  // The library context and property query the SSL_CTX was created with
  // (SSL_CTX_new_ex); OpenSSL 3.0 has no getter for them. nullptr/"" for SSL_CTX_new.
  OSSL_LIB_CTX* libctx = nullptr;
  std::string propq;
  // TLS 1.3 tickets per full handshake; negative: tickets.per_handshake from the config.
  int tickets_per_handshake = -1;
};

// Installs keysvc's ticket handling on `ctx`. The SSL_CTX keeps `service` alive.
// Throws std::runtime_error (one line) if the provider, KDF, cipher or MAC cannot be
// set up in `options.libctx`, or if the SSL_CTX accepts replayable early data (above).
void install(SSL_CTX* ctx, std::shared_ptr<TicketKeyService> service, const InstallOptions& options = {});

// For long-lived TLS 1.3 connections: if the encrypt generation changed since the
// last ticket this connection received from keysvc, queues a fresh ticket
// (SSL_new_session_ticket; it goes out with the connection's next write) and returns
// true. Returns false if nothing was needed or possible (not TLS 1.3, handshake not
// finished, keysvc not installed, no encrypt generation).
bool push_ticket_if_rotated(SSL* ssl);

// What the ticket callbacks have seen, computed from the service's one counter set
// (usage.h): so the figures are those of the service installed on the SSL_CTX, across
// every SSL_CTX it is installed on. "resumed" is counted when a handshake is done and
// SSL_session_reused() says so (through the SSL_CTX's info callback, which install()
// chains after the server's own: a server that replaces it afterwards loses that count).
struct TicketCallbackCounters {
  std::uint64_t issued = 0;            // tickets encrypted
  std::uint64_t issue_failed = 0;      // no ticket sent (HSM failure, no generation)
  std::uint64_t resumed = 0;           // tickets decrypted and accepted
  std::uint64_t renewed = 0;           // ... of which renewed because their generation is older
                                       // (TLS 1.3 resumptions always get one fresh ticket)
  std::uint64_t unknown_key = 0;       // presented key name not in the ring
  std::uint64_t retired_key = 0;       // presented key name expired or revoked
  std::uint64_t hsm_error = 0;         // HSM failed while opening a ticket
  std::uint64_t rejected_bad_ticket = 0;  // failed MAC/decrypt, or unreadable app data
  std::uint64_t rejected_unopened = 0;    // OpenSSL refused the ticket before asking keysvc (too short)
  std::uint64_t empty_ticket = 0;         // TLS 1.2 client asked for a ticket without presenting one
  std::uint64_t rejected_too_old = 0;     // original authentication older than max_session_age
  std::uint64_t rejected_bad_epoch = 0;   // epoch tier: from the future or before its generation encrypted
  std::uint64_t pushed = 0;               // tickets pushed after a rotation (push_ticket_if_rotated)
  std::uint64_t over_cap = 0;             // tickets beyond the per-handshake cap, refused unopened
};
// Counters of the service installed on `ctx`, all zero if keysvc is not installed on it.
TicketCallbackCounters counters(const SSL_CTX* ctx);
// The same figures from a snapshot of a service's counters.
TicketCallbackCounters counters_of(const TicketCounters::Snapshot& snapshot);

}  // namespace keysvc::openssl
