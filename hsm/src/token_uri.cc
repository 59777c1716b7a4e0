#include "keysvc/hsm/token_uri.h"

#include <p11-kit/uri.h>

#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

struct TokenUri::Impl {
  P11KitUri* uri = nullptr;
  std::string text;  // with any pin-value removed
  ~Impl() {
    if (uri != nullptr) p11_kit_uri_free(uri);
  }
};

TokenUri TokenUri::parse(std::string_view text) {
  auto impl = std::make_shared<Impl>();
  impl->uri = p11_kit_uri_new();
  if (impl->uri == nullptr) throw std::bad_alloc();
  std::string copy(text);
  WipeOnExit wipe_copy(copy);  // it may carry a pin-value
  int rc = p11_kit_uri_parse(copy.c_str(), P11_KIT_URI_FOR_ANY, impl->uri);
  if (rc != P11_KIT_URI_OK) {
    std::string shown = copy.find("pin-value") == std::string::npos ? copy : "(URI with pin-value)";
    throw ConfigError("invalid PKCS#11 URI '" + shown + "': " + p11_kit_uri_message(rc));
  }
  CK_ATTRIBUTE_PTR attrs;
  CK_ULONG n_attrs = 0;
  attrs = p11_kit_uri_get_attributes(impl->uri, &n_attrs);
  (void)attrs;
  if (n_attrs > 0) {
    throw ConfigError("PKCS#11 URI '" + copy.substr(0, copy.find('?')) +
                      "' names objects; keysvc needs a token URI such as pkcs11:token=LABEL");
  }
  // Keep a printable form without the PIN.
  if (p11_kit_uri_get_pin_value(impl->uri) != nullptr) {
    P11KitUri* shown = p11_kit_uri_new();
    char* out = nullptr;
    p11_kit_uri_parse(copy.c_str(), P11_KIT_URI_FOR_ANY, shown);
    p11_kit_uri_set_pin_value(shown, nullptr);
    if (p11_kit_uri_format(shown, P11_KIT_URI_FOR_ANY, &out) == P11_KIT_URI_OK && out) {
      impl->text = out;
      free(out);
    }
    p11_kit_uri_free(shown);
  } else {
    impl->text = copy;
  }
  TokenUri u;
  u.impl_ = std::move(impl);
  return u;
}

bool TokenUri::matches(const CK_TOKEN_INFO& info) const {
  return p11_kit_uri_match_token_info(impl_->uri, &info) == 1;
}

namespace {
std::optional<std::string> opt(const char* s) {
  if (s == nullptr) return std::nullopt;
  return std::string(s);
}
}  // namespace

std::optional<std::string> TokenUri::pin_source() const {
  return opt(p11_kit_uri_get_pin_source(impl_->uri));
}
std::optional<SecretString> TokenUri::pin_value() const {
  const char* value = p11_kit_uri_get_pin_value(impl_->uri);
  if (value == nullptr) return std::nullopt;
  return SecretString::copy_of(value);
}
std::optional<std::string> TokenUri::module_path() const {
  return opt(p11_kit_uri_get_module_path(impl_->uri));
}
std::string TokenUri::describe() const { return impl_->text; }

std::string trim_padded(const unsigned char* field, std::size_t size) {
  std::string s(reinterpret_cast<const char*>(field), size);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace keysvc::hsm
