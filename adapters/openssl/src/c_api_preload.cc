// keysvc_preload() and keysvc_service_open_preloaded() (keysvc_openssl.h): the
// configuration and the PIN read once, in a server's privileged master, and the token
// opened in each worker with the PIN from memory (OpenOptions::pin).
#include <utility>

#include "c_api_support.h"
#include "keysvc/config.h"
#include "keysvc/openssl/keysvc_openssl.h"

struct keysvc_preloaded {
  keysvc::Config config;
  keysvc::hsm::SecretString pin;  // wiped when the handle is freed
};

using keysvc::openssl::detail::c_entry;
using keysvc::openssl::detail::set_error;

extern "C" keysvc_preloaded* keysvc_preload(const char* config_path, char* err, size_t err_len) {
  if (config_path == nullptr) {
    set_error(err, err_len, "keysvc_preload: no config path");
    return nullptr;
  }
  return c_entry<keysvc_preloaded*>(err, err_len, nullptr, [&] {
    keysvc::Config config = keysvc::Config::load_file(config_path);
    keysvc::hsm::SecretString pin = keysvc::pin_source_of(config).read();
    return new keysvc_preloaded{std::move(config), std::move(pin)};
  });
}

extern "C" keysvc_service* keysvc_service_open_preloaded(const keysvc_preloaded* preloaded, char* err,
                                                         size_t err_len) {
  if (preloaded == nullptr) {
    set_error(err, err_len, "keysvc_service_open_preloaded: no preloaded configuration");
    return nullptr;
  }
  return c_entry<keysvc_service*>(err, err_len, nullptr, [&] {
    keysvc::OpenOptions options;
    options.pin = keysvc::hsm::PinSource::literal(keysvc::hsm::SecretString::copy_of(preloaded->pin.reveal()));
    return new keysvc_service{keysvc::TicketKeyService::open(preloaded->config, std::move(options))};
  });
}

extern "C" void keysvc_preloaded_free(keysvc_preloaded* preloaded) { delete preloaded; }
