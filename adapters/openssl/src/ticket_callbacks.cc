// The ticket callbacks OpenSSL calls (ticket_callbacks.h): keys for each ticket from
// keysvc's KDF, keysvc's app-data record in each ticket, and the counts of what resumed.
#include "ticket_callbacks.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <utility>

#include "adapter_state.h"
#include "app_data.h"
#include "keysvc/hsm/secure_memory.h"
#include "keysvc/openssl/ticket_kdf.h"
#include "keysvc/ticket_rules.h"

namespace keysvc::openssl {
namespace {

// How many presented tickets one handshake may cost key derivations for. OpenSSL calls
// the ticket callback once per PSK identity in a TLS 1.3 ClientHello until one decrypts;
// real clients offer one or two. Key names are public, so without a cap one hostile
// ClientHello with a thousand identities under a real name would cost a thousand
// derivations (and look like a thousand MAC failures). Beyond it: a full handshake.
constexpr int kMaxTicketsPerHandshake = 2;

// Key bytes on their way from the KDF into OpenSSL's contexts: the thread's block of
// secure memory (locked, left out of core dumps, zeroed in a fork child), so that a
// ticket costs no allocation, wiped when the callback returns, whatever the path. Empty
// when no secure block is left (then no ticket this time). OpenSSL never nests ticket
// callbacks on one thread.
static_assert(KEYSVC_KDF_OPEN_OUTPUT_BYTES <= KEYSVC_KDF_ISSUE_OUTPUT_BYTES);
using KeyScratch = hsm::ThreadScratch<hsm::SecureBuffer<KEYSVC_KDF_ISSUE_OUTPUT_BYTES>, struct KeyScratchTag>;

// What the evp callback last did on this thread. OpenSSL calls the evp callback and
// then dec_cb for the same SSL on the same thread within one handshake step, so dec_cb
// can tell why a ticket got NO_DECRYPT: the MAC or decryption failed after a
// successful open, or OpenSSL never asked (ticket too short to hold a name and IV).
struct LastOpen {
  const SSL* ssl = nullptr;
  bool opened = false;
  bool older_generation = false;  // renewing because the ticket's generation is older
  KeyName name{};                 // the presented ticket's key name
};
thread_local LastOpen t_last_open;

bool set_mac_key(const AdapterState& st, EVP_MAC_CTX* hctx, const unsigned char* key) {
  OSSL_PARAM params[4];
  int i = 0;
  params[i++] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key),
                                                  kTicketKeyBytes);
  params[i++] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0);
  if (!st.propq.empty())
    params[i++] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_PROPERTIES, const_cast<char*>(st.propq.c_str()), 0);
  params[i] = OSSL_PARAM_construct_end();
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

// enc=1: returns 1 with a ticket key set up, or 0 (no ticket this time).
int issue_ticket(AdapterState& st, SSL* s, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cctx,
                 EVP_MAC_CTX* hctx) {
  KeyScratch out;
  if (!out) {
    st.service->count(TicketEvent::kIssueFailed);
    return 0;
  }
  KdfContextPool::Lease kctx(*st.kdf_contexts);
  if (kctx.get() == nullptr) {
    st.service->count(TicketEvent::kIssueFailed);
    return 0;
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(KEYSVC_KDF_PARAM_OPERATION, const_cast<char*>("issue"), 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_KDF_derive(kctx.get(), out->data(), KEYSVC_KDF_ISSUE_OUTPUT_BYTES, params) != 1) return 0;  // counted there
  const unsigned char* aes_key = out->data() + kKeyNameBytes + kIvBytes;
  const unsigned char* hmac_key = aes_key + kTicketKeyBytes;
  if (EVP_EncryptInit_ex2(cctx, st.cipher, aes_key, out->data() + kKeyNameBytes, nullptr) != 1 ||
      !set_mac_key(st, hctx, hmac_key)) {
    st.service->count(TicketEvent::kIssueFailed);
    return 0;
  }
  std::memcpy(key_name, out->data(), kKeyNameBytes);
  std::memcpy(iv, out->data() + kKeyNameBytes, kIvBytes);
  if (Connection* c = connection_of(s, true)) {
    c->last_issued.emplace();
    std::memcpy(c->last_issued->data(), key_name, kKeyNameBytes);
  }
  return 1;
}

// enc=0: returns 1 (use), 2 (use and renew) or 0 (full handshake). Never -1: an HSM
// problem must not abort the handshake.
int open_ticket(AdapterState& st, const SSL* s, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cctx,
                EVP_MAC_CTX* hctx) {
  t_last_open = {s, false, false, {}};
  std::memcpy(t_last_open.name.data(), key_name, kKeyNameBytes);
  Connection* c = connection_of(s, true);
  if (c == nullptr || c->tickets_opened >= kMaxTicketsPerHandshake) {
    st.service->count(TicketEvent::kOverCap);
    return 0;
  }
  ++c->tickets_opened;
  KeyScratch out;
  if (!out) {
    st.service->record(t_last_open.name, TicketOutcome::kHsmError);
    return 0;
  }
  KdfContextPool::Lease kctx(*st.kdf_contexts);
  if (kctx.get() == nullptr) {
    st.service->record(t_last_open.name, TicketOutcome::kHsmError);
    return 0;
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(KEYSVC_KDF_PARAM_OPERATION, const_cast<char*>("open"), 0),
      OSSL_PARAM_construct_octet_string(KEYSVC_KDF_PARAM_KEY_NAME, key_name, kKeyNameBytes),
      OSSL_PARAM_construct_octet_string(KEYSVC_KDF_PARAM_IV, iv, kIvBytes),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_KDF_derive(kctx.get(), out->data(), KEYSVC_KDF_OPEN_OUTPUT_BYTES, params) != 1)
    return 0;  // the service counted why (unknown, retired, HSM error)
  int status = 0;
  OSSL_PARAM get[] = {OSSL_PARAM_construct_int(KEYSVC_KDF_PARAM_OPEN_STATUS, &status), OSSL_PARAM_construct_end()};
  EVP_KDF_CTX_get_params(kctx.get(), get);
  if (EVP_DecryptInit_ex2(cctx, st.cipher, out->data(), iv, nullptr) != 1 ||
      !set_mac_key(st, hctx, out->data() + kTicketKeyBytes)) {
    st.service->record(t_last_open.name, TicketOutcome::kDecryptFailure);
    return 0;
  }
  t_last_open.opened = true;
  t_last_open.older_generation = status == KEYSVC_OPEN_RENEW;
  // TLS 1.3 clients use a ticket once (RFC 8446 C.4), and OpenSSL's own keys send a new
  // ticket after every TLS 1.3 resumption: do the same, or the client's next
  // connection is a full handshake. TLS 1.2 tickets are renewed only when older.
  return t_last_open.older_generation || SSL_version(s) == TLS1_3_VERSION ? 2 : 1;
}

}  // namespace

int ticket_key_cb(SSL* s, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx,
                  int enc) {
  AdapterState* st = state_of(SSL_get_SSL_CTX(s));
  if (st == nullptr) return 0;
  return enc ? issue_ticket(*st, s, key_name, iv, cctx, hctx) : open_ticket(*st, s, key_name, iv, cctx, hctx);
}

namespace {

std::int64_t unix_now(const AdapterState& st) {
  return std::chrono::duration_cast<std::chrono::seconds>(st.service->now().time_since_epoch()).count();
}

std::optional<TicketAppData> read_app_data(SSL_SESSION* session) {
  void* data = nullptr;
  std::size_t len = 0;
  if (session == nullptr || SSL_SESSION_get0_ticket_appdata(session, &data, &len) != 1 || data == nullptr)
    return std::nullopt;
  return TicketAppData::decode({static_cast<const std::uint8_t*>(data), len});
}

}  // namespace

// Called before each ticket is built: stamps the record, keeping the original
// authentication time of a resumed session.
int generate_app_data_cb(SSL* s, void* arg) {
  auto* st = static_cast<AdapterState*>(arg);
  SSL_SESSION* session = SSL_get_session(s);
  if (session == nullptr) return 0;
  TicketAppData record;
  auto previous = SSL_session_reused(s) ? read_app_data(session) : std::nullopt;
  record.auth_time = previous ? previous->auth_time : unix_now(*st);
  record.issued_under = st->service->encrypt_key_name().value_or(KeyName{});
  const auto bytes = record.encode();
  return SSL_SESSION_set1_ticket_appdata(session, bytes.data(), bytes.size());
}

// Called after a ticket was (or could not be) decrypted. Never touch the session unless
// the status is a success: only then is it one (SSL_CTX_set_session_ticket_cb(3)).
//
// Per-key usage (TicketKeyService::record; the service itself counts issued, unknown key,
// expired, revoked and HSM errors). What OpenSSL 3.0 exposes here is only the final
// status of tls_decrypt_ticket (ssl/t1_lib.c), which after our callback returned a key
// checks, in order: the ticket is longer than name + IV + MAC, the HMAC matches
// (CRYPTO_memcmp), EVP_DecryptUpdate/Final (CBC padding), d2i_SSL_SESSION with no
// trailing bytes; every one of these failing gives the same SSL_TICKET_NO_DECRYPT. So:
//   mac_failure      NO_DECRYPT for a ticket keysvc opened keys for. The MAC is checked
//                    first, and a ticket that passes it was made by a holder of the
//                    per-ticket key, so in practice this is a forged, corrupted or
//                    truncated ticket. Also tickets OpenSSL refused before asking keysvc
//                    (shorter than name + IV), counted under the 16-byte name they start
//                    with when they have one.
//   decrypt_failure  the ticket decrypted and parsed (SUCCESS) but keysvc's app-data record
//                    in it is missing or malformed, or the derived keys could not be set up
//                    in OpenSSL's cipher/MAC contexts (open_ticket).
//   max_session_age  the record's original authentication time is too old.
//   resumed          accepted; renewed: accepted and replaced because its generation is
//                    older than the encrypt generation (TLS 1.3's fresh ticket after every
//                    resumption is counted as issued, not renewed).
SSL_TICKET_RETURN decrypt_app_data_cb(SSL* s, SSL_SESSION* session, const unsigned char* keyname,
                                      std::size_t keyname_len, SSL_TICKET_STATUS status, void* arg) {
  auto* st = static_cast<AdapterState*>(arg);
  const bool asked = t_last_open.ssl == s;
  const bool opened_here = asked && t_last_open.opened;
  const bool older_generation = opened_here && t_last_open.older_generation;
  std::optional<KeyName> name;
  if (asked) {
    name = t_last_open.name;
  } else if (keyname != nullptr && keyname_len == kKeyNameBytes) {
    name.emplace();
    std::memcpy(name->data(), keyname, kKeyNameBytes);
  }
  t_last_open = {};
  auto record = [&](TicketOutcome outcome) {
    if (name) st->service->record(*name, outcome);
  };
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
      break;
    case SSL_TICKET_NO_DECRYPT:
      // Opened here: key found and set up, yet OpenSSL could not use the ticket (bad MAC
      // or padding). Otherwise OpenSSL refused it before asking, or the open was refused
      // and counted already (unknown, retired, HSM error, over the per-handshake cap).
      if (!asked) st->service->count(TicketEvent::kRejectedUnopened);
      if (opened_here || !asked) record(TicketOutcome::kMacFailure);
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    case SSL_TICKET_EMPTY:  // the client asks for a ticket
      st->service->count(TicketEvent::kEmptyTicket);
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
      return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
  auto app_data = read_app_data(session);
  if (!app_data) {
    record(TicketOutcome::kDecryptFailure);
    return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
  if (!session_young_enough(app_data->auth_time, unix_now(*st), st->max_session_age)) {
    record(TicketOutcome::kMaxSessionAge);
    return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
  // Counted as resumed by info_cb once the handshake is done and really resumed.
  if (Connection* c = connection_of(s, true); c != nullptr && name) {
    c->accepted = *name;
    c->accepted_renewed = status == SSL_TICKET_SUCCESS_RENEW && older_generation;
  }
  return status == SSL_TICKET_SUCCESS_RENEW ? SSL_TICKET_RETURN_USE_RENEW : SSL_TICKET_RETURN_USE;
}

namespace {

// Counts a finished handshake that really resumed (see Connection::accepted).
void count_resumption(const SSL* s, AdapterState& st) {
  Connection* c = connection_of(s, false);
  if (c == nullptr) return;
  c->tickets_opened = 0;  // a renegotiation (TLS 1.2) is a new handshake
  if (!c->accepted) return;
  const KeyName name = *std::exchange(c->accepted, std::nullopt);
  if (!SSL_session_reused(const_cast<SSL*>(s))) return;
  st.service->record(name, TicketOutcome::kResumed);
  if (c->accepted_renewed) st.service->record(name, TicketOutcome::kRenewed);
}

}  // namespace

// OpenSSL calls the info callback at every state of every handshake (17 times a
// handshake on average in keysvc-bench's mix); keysvc needs only the end, so the other
// calls return before any lookup.
void info_cb(const SSL* s, int where, int) {
  if ((where & SSL_CB_HANDSHAKE_DONE) == 0) return;
  if (AdapterState* st = state_of(SSL_get_SSL_CTX(s))) count_resumption(s, *st);
}

void chained_info_cb(const SSL* s, int where, int ret) {
  AdapterState* st = state_of(SSL_get_SSL_CTX(s));
  if (st == nullptr) return;
  if (st->previous_info_cb != nullptr) st->previous_info_cb(s, where, ret);
  if ((where & SSL_CB_HANDSHAKE_DONE) != 0) count_resumption(s, *st);
}

}  // namespace keysvc::openssl
