// The C API (keysvc_openssl.h) over the C++ one.
#include <cstdio>
#include <exception>

#include "keysvc/openssl/keysvc_openssl.h"
#include "keysvc/openssl/ticket_adapter.h"

struct keysvc_service {
  std::shared_ptr<keysvc::TicketKeyService> service;
};

namespace {
void set_error(char* err, std::size_t err_len, const char* message) {
  if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", message);
}
}  // namespace

extern "C" keysvc_service* keysvc_service_open(const char* config_path, char* err, size_t err_len) {
  if (config_path == nullptr) {
    set_error(err, err_len, "keysvc_service_open: no config path");
    return nullptr;
  }
  try {
    auto service = keysvc::TicketKeyService::open(keysvc::Config::load_file(config_path));
    return new keysvc_service{std::move(service)};
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return nullptr;
  }
}

extern "C" void keysvc_service_free(keysvc_service* service) { delete service; }

extern "C" int keysvc_ssl_ctx_install(SSL_CTX* ctx, keysvc_service* service, OSSL_LIB_CTX* libctx,
                                      const char* propq, char* err, size_t err_len) {
  if (service == nullptr) {
    set_error(err, err_len, "keysvc_ssl_ctx_install: no service");
    return 0;
  }
  try {
    keysvc::openssl::InstallOptions options;
    options.libctx = libctx;
    options.propq = propq ? propq : "";
    keysvc::openssl::install(ctx, service->service, options);
    return 1;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 0;
  }
}
