// TEMPORARY (see open_with_pin.h): the PIN reaches TicketKeyService::open() as the token
// URI's pin-value, the one PIN source a Config can carry in memory. The rewritten URI
// lives only in the copy of the configuration the service keeps; messages show URIs
// through hsm::TokenUri::describe(), which leaves pin-value out.
#include "open_with_pin.h"

#include <p11-kit/uri.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "keysvc/hsm/token_uri.h"

namespace keysvc::openssl::detail {

namespace {

struct UriDeleter {
  void operator()(P11KitUri* uri) const noexcept { p11_kit_uri_free(uri); }
};

// `uri` with pin-value = pin and no pin-source.
std::string with_pin_value(const std::string& uri, const hsm::SecretString& pin) {
  std::unique_ptr<P11KitUri, UriDeleter> parsed(p11_kit_uri_new());
  if (!parsed || p11_kit_uri_parse(uri.c_str(), P11_KIT_URI_FOR_ANY, parsed.get()) != P11_KIT_URI_OK) {
    throw ConfigError("hsm.token: not a PKCS#11 URI");
  }
  std::string value(pin.reveal());
  hsm::WipeOnExit wipe_value(value);
  p11_kit_uri_set_pin_source(parsed.get(), nullptr);
  p11_kit_uri_set_pin_value(parsed.get(), value.c_str());
  char* text = nullptr;
  if (p11_kit_uri_format(parsed.get(), P11_KIT_URI_FOR_ANY, &text) != P11_KIT_URI_OK || text == nullptr) {
    throw ConfigError("hsm.token: cannot add the preloaded PIN to the URI");
  }
  std::string formatted(text);
  hsm::wipe(text, formatted.size());
  std::free(text);
  return formatted;
}

}  // namespace

hsm::PinSource pin_source_of(const Config& config) {
  if (!config.hsm.pin_source.empty()) return hsm::PinSource::parse(config.hsm.pin_source);
  hsm::TokenUri uri = hsm::TokenUri::parse(config.hsm.token_uri);
  if (auto source = uri.pin_source()) return hsm::PinSource::parse(*source);
  if (auto value = uri.pin_value()) return hsm::PinSource::literal(std::move(*value));
  throw ConfigError("no PIN source: set hsm.pin (file:PATH or env:NAME) or pin-source in the token URI");
}

std::shared_ptr<TicketKeyService> open_with_pin(const Config& config, const hsm::SecretString& pin) {
  Config with_pin = config;
  with_pin.hsm.pin_source.clear();
  with_pin.hsm.token_uri = with_pin_value(config.hsm.token_uri, pin);
  try {
    auto service = TicketKeyService::open(with_pin);
    hsm::wipe(with_pin.hsm.token_uri);
    return service;
  } catch (...) {
    hsm::wipe(with_pin.hsm.token_uri);
    throw;
  }
}

}  // namespace keysvc::openssl::detail
