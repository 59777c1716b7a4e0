// install(), which wires keysvc's ticket callbacks (ticket_callbacks.cc) to an SSL_CTX,
// and what a server asks of an installed SSL_CTX (a pushed ticket, the counters).
#include "keysvc/openssl/ticket_adapter.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "adapter_state.h"
#include "keysvc/log.h"
#include "keysvc/openssl/ticket_kdf.h"
#include "provider.h"
#include "ticket_callbacks.h"

namespace keysvc::openssl {

namespace {

// Checks that `libctx`/`propq` can give the MAC OpenSSL will use for tickets.
void require_hmac_sha256(OSSL_LIB_CTX* libctx, const char* propq) {
  EVP_MAC* mac = EVP_MAC_fetch(libctx, "HMAC", propq);
  EVP_MD* md = EVP_MD_fetch(libctx, "SHA256", propq);
  bool ok = mac != nullptr && md != nullptr;
  EVP_MAC_free(mac);
  EVP_MD_free(md);
  if (!ok) throw std::runtime_error("HMAC-SHA256 is not available in the SSL_CTX's library context");
}

// Early data with anti-replay off: OpenSSL then accepts 0-RTT data under keysvc's
// stateless tickets as often as a recorded ClientHello is replayed (with anti-replay on it
// issues stateful tickets instead, which never reach keysvc: warned below).
bool replayable_early_data(const SSL_CTX* ctx) {
  return SSL_CTX_get_max_early_data(ctx) > 0 && (SSL_CTX_get_options(ctx) & SSL_OP_NO_ANTI_REPLAY) != 0;
}

// The session timeout (and the TLS 1.3 ticket lifetime hint) a server set for itself
// (nginx's ssl_session_timeout, Apache's SSLSessionCacheTimeout) is its decision: kept
// when shorter than tickets.lifetime, capped at it when longer (keysvc refuses older
// tickets anyway), either said in one line. OpenSSL's default becomes tickets.lifetime.
void set_session_timeout(SSL_CTX* ctx, long lifetime) {
  const long current = SSL_CTX_get_timeout(ctx);
  long openssl_default = current;
  if (SSL_CTX* fresh = SSL_CTX_new(SSL_CTX_get_ssl_method(ctx))) {
    openssl_default = SSL_CTX_get_timeout(fresh);
    SSL_CTX_free(fresh);
  }
  if (current == lifetime) return;
  if (current == openssl_default) {
    SSL_CTX_set_timeout(ctx, lifetime);
  } else if (current < lifetime) {
    logger()->info("keeping the SSL_CTX's session timeout of {} s, shorter than tickets.lifetime ({} s)", current,
                   lifetime);
  } else {
    logger()->warn("the SSL_CTX's session timeout of {} s is capped at tickets.lifetime ({} s)", current, lifetime);
    SSL_CTX_set_timeout(ctx, lifetime);
  }
}

}  // namespace

void install(SSL_CTX* ctx, std::shared_ptr<TicketKeyService> service, const InstallOptions& options) {
  if (ctx == nullptr || !service) throw std::invalid_argument("keysvc install: null SSL_CTX or service");
  if (state_index() < 0) throw std::runtime_error("keysvc install: no SSL_CTX ex_data index");
  if (state_of(ctx) != nullptr) throw std::runtime_error("keysvc is already installed on this SSL_CTX");
  if (replayable_early_data(ctx))
    throw std::runtime_error("keysvc install: early data (max_early_data > 0) with SSL_OP_NO_ANTI_REPLAY would accept "
                             "replayed 0-RTT data under keysvc's tickets: turn early data off or anti-replay on");

  auto st = std::make_unique<AdapterState>();
  st->service = service;
  st->propq = options.propq;
  st->max_session_age = service->config().tickets.max_session_age.count();
  const char* propq = st->propq.empty() ? nullptr : st->propq.c_str();

  // Fetch the ciphers first: this activates the libctx's configured (or default)
  // providers before keysvc's own is added.
  st->cipher = EVP_CIPHER_fetch(options.libctx, "AES-256-CBC", propq);
  if (st->cipher == nullptr)
    throw std::runtime_error("AES-256-CBC is not available in the SSL_CTX's library context");
  require_hmac_sha256(options.libctx, propq);

  st->provider = load_provider(options.libctx, service);
  std::string kdf_query = "provider=" + st->provider.name;
  st->kdf = EVP_KDF_fetch(options.libctx, KEYSVC_TICKET_KDF_NAME, kdf_query.c_str());
  if (st->kdf == nullptr) throw std::runtime_error("cannot fetch " KEYSVC_TICKET_KDF_NAME " from " + st->provider.name);
  st->kdf_contexts.emplace(st->kdf);

  int tickets = options.tickets_per_handshake >= 0 ? options.tickets_per_handshake
                                                   : service->config().tickets.per_handshake;
  if (SSL_CTX_set_ex_data(ctx, state_index(), st.get()) != 1)
    throw std::runtime_error("keysvc install: SSL_CTX_set_ex_data failed");
  AdapterState* state = st.release();  // owned by the SSL_CTX from here on (free_state)

  // With SSL_OP_NO_TICKET, TLS 1.3 would switch to stateful tickets and never call us.
  SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
  SSL_CTX_set_session_ticket_cb(ctx, generate_app_data_cb, decrypt_app_data_cb, state);
  state->previous_info_cb = SSL_CTX_get_info_callback(ctx);
  SSL_CTX_set_info_callback(ctx, state->previous_info_cb != nullptr ? chained_info_cb : info_cb);
  SSL_CTX_set_num_tickets(ctx, static_cast<std::size_t>(tickets));
  set_session_timeout(ctx, static_cast<long>(service->config().tickets.lifetime.count()));
  if (SSL_CTX_get_max_early_data(ctx) > 0)
    logger()->warn("max_early_data > 0 without SSL_OP_NO_ANTI_REPLAY: TLS 1.3 tickets bypass keysvc");
}

bool push_ticket_if_rotated(SSL* ssl) {
  if (ssl == nullptr || SSL_version(ssl) != TLS1_3_VERSION || !SSL_is_init_finished(ssl)) return false;
  AdapterState* st = state_of(SSL_get_SSL_CTX(ssl));
  if (st == nullptr) return false;
  auto current = st->service->encrypt_key_name();
  const Connection* c = connection_of(ssl, false);
  if (!current || (c != nullptr && c->last_issued == current)) return false;
  if (SSL_new_session_ticket(ssl) != 1) return false;
  st->service->count(TicketEvent::kPushed);
  return true;
}

TicketCallbackCounters counters(const SSL_CTX* ctx) {
  TicketCallbackCounters c;
  const AdapterState* st = state_of(ctx);
  if (st == nullptr) return c;
  return counters_of(st->service->ticket_counters());
}

TicketCallbackCounters counters_of(const TicketCounters::Snapshot& s) {
  TicketCallbackCounters c;
  c.issued = s.total(TicketOutcome::kIssued);
  c.issue_failed = s[TicketEvent::kIssueFailed];
  c.resumed = s.total(TicketOutcome::kResumed);
  c.renewed = s.total(TicketOutcome::kRenewed);
  c.unknown_key = s.total(TicketOutcome::kUnknownKey);
  c.retired_key = s.total(TicketOutcome::kExpired) + s.total(TicketOutcome::kRevoked);
  c.hsm_error = s.total(TicketOutcome::kHsmError);
  c.rejected_bad_ticket = s.total(TicketOutcome::kMacFailure) + s.total(TicketOutcome::kDecryptFailure);
  c.rejected_too_old = s.total(TicketOutcome::kMaxSessionAge);
  c.rejected_bad_epoch = s.total(TicketOutcome::kBadEpoch);
  c.rejected_unopened = s[TicketEvent::kRejectedUnopened];
  c.empty_ticket = s[TicketEvent::kEmptyTicket];
  c.pushed = s[TicketEvent::kPushed];
  c.over_cap = s[TicketEvent::kOverCap];
  return c;
}

}  // namespace keysvc::openssl
