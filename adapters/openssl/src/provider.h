// keysvc's in-process OpenSSL provider: registration and lookup of the service each
// provider instance serves.
#pragma once

#include <openssl/core.h>
#include <openssl/provider.h>

#include <memory>
#include <string>

#include "keysvc/ticket_key_service.h"

namespace keysvc::openssl {

// What every algorithm context of one provider instance shares.
struct ProviderContext {
  std::shared_ptr<TicketKeyService> service;
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
