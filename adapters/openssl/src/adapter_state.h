// What the ticket callbacks of one SSL_CTX share (AdapterState, in the SSL_CTX's ex_data)
// and what they keep per connection (Connection, in the SSL's ex_data). Internal to the
// adapter: install() (ticket_adapter.cc) makes the state, the callbacks
// (ticket_callbacks.cc) read it.
#pragma once

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "keysvc/key_name.h"
#include "keysvc/ticket_key_service.h"
#include "kdf_context_pool.h"
#include "provider.h"

namespace keysvc::openssl {

// Everything the callbacks of one SSL_CTX need; owned by the SSL_CTX's ex_data.
struct AdapterState {
  std::shared_ptr<TicketKeyService> service;
  LoadedProvider provider;
  EVP_KDF* kdf = nullptr;
  std::optional<KdfContextPool> kdf_contexts;  // of `kdf`, made by install()
  EVP_CIPHER* cipher = nullptr;
  std::string propq;
  std::int64_t max_session_age = 0;
  // The server's own info callback, called first from ours (chained_info_cb).
  void (*previous_info_cb)(const SSL*, int, int) = nullptr;

  ~AdapterState() {
    kdf_contexts.reset();  // before the KDF they are contexts of
    EVP_KDF_free(kdf);
    EVP_CIPHER_free(cipher);
    if (provider.provider != nullptr) OSSL_PROVIDER_unload(provider.provider);
  }
};

// Per connection (SSL ex_data): public facts only, no key bytes.
struct Connection {
  std::optional<KeyName> last_issued;  // the key name of the last ticket keysvc issued on it
  int tickets_opened = 0;              // tickets keysvc derived keys for in this handshake
  // A ticket OpenSSL accepted; counted as resumed once the handshake is done and
  // SSL_session_reused() confirms it (a PSK can still be dropped after its ticket
  // decrypted: another cipher suite's hash, a session OpenSSL will not resume).
  std::optional<KeyName> accepted;
  bool accepted_renewed = false;
};

// The SSL_CTX ex_data index of AdapterState (-1 if OpenSSL could not make one).
int state_index();
// The state install() left on `ctx`; nullptr if keysvc is not installed there.
AdapterState* state_of(const SSL_CTX* ctx);
// The connection's record, made on first use when `make`; nullptr if there is none (or
// out of memory).
Connection* connection_of(const SSL* s, bool make);

}  // namespace keysvc::openssl
