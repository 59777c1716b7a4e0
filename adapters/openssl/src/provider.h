// keysvc's in-process OpenSSL provider: registration and lookup of the service each
// provider instance serves.
#pragma once

#include <openssl/core.h>
#include <openssl/provider.h>

#include <memory>
#include <string>

#include "keysvc/ticket_key_service.h"

namespace keysvc::openssl {

// What every algorithm context of one provider instance shares. Each instance
// advertises its algorithms with the property "provider=keysvc-N" (OpenSSL does not
// add it implicitly), so the table lives here, per instance.
//
// The instance holds its service weakly: the SSL_CTX owns it (ticket_adapter.cc), and
// OpenSSL may keep a provider loaded until process exit, long after the SSL_CTX and
// the token are gone. Once the service is gone, the KDF refuses new contexts.
struct ProviderContext {
  std::weak_ptr<TicketKeyService> service;
  std::string properties;  // "provider=keysvc-N"
  OSSL_ALGORITHM kdfs[2];
};

// Adds and loads a provider named "keysvc-N" (N unique in the process) into `libctx`,
// serving `service`. Returns the loaded provider (unload with OSSL_PROVIDER_unload)
// and its name. Throws std::runtime_error.
struct LoadedProvider {
  OSSL_PROVIDER* provider = nullptr;
  std::string name;
};
LoadedProvider load_provider(OSSL_LIB_CTX* libctx, std::shared_ptr<TicketKeyService> service);

// The KDF's dispatch table (ticket_kdf.cc).
extern const OSSL_DISPATCH kTicketKdfFunctions[];

}  // namespace keysvc::openssl
