// The C API (keysvc_openssl.h) over the C++ one. Preloading: c_api_preload.cc.
#include "keysvc/openssl/keysvc_openssl.h"

#include "c_api_support.h"
#include "keysvc/openssl/ticket_adapter.h"

using keysvc::openssl::detail::c_entry;
using keysvc::openssl::detail::set_error;

extern "C" keysvc_service* keysvc_service_open(const char* config_path, char* err, size_t err_len) {
  if (config_path == nullptr) {
    set_error(err, err_len, "keysvc_service_open: no config path");
    return nullptr;
  }
  return c_entry<keysvc_service*>(err, err_len, nullptr, [&] {
    return new keysvc_service{keysvc::TicketKeyService::open(keysvc::Config::load_file(config_path))};
  });
}

extern "C" void keysvc_service_free(keysvc_service* service) {
  char ignored[1];
  c_entry<int>(ignored, 0, 0, [&] {
    delete service;
    return 1;
  });
}

extern "C" void keysvc_service_stop(keysvc_service* service) {
  if (service != nullptr) service->service->stop_background();
}

extern "C" int keysvc_ssl_ctx_install(SSL_CTX* ctx, keysvc_service* service, OSSL_LIB_CTX* libctx,
                                      const char* propq, char* err, size_t err_len) {
  if (service == nullptr) {
    set_error(err, err_len, "keysvc_ssl_ctx_install: no service");
    return 0;
  }
  return c_entry<int>(err, err_len, 0, [&] {
    keysvc::openssl::InstallOptions options;
    options.libctx = libctx;
    options.propq = propq ? propq : "";
    keysvc::openssl::install(ctx, service->service, options);
    return 1;
  });
}
