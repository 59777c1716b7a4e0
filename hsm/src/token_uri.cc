#include "keysvc/hsm/token_uri.h"

#include <p11-kit/uri.h>

#include <ostream>

#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

namespace {

constexpr std::string_view kPinValue = "pin-value=";

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The percent-decoded `encoded`, straight into secure memory.
SecretString decode_pin(std::string_view encoded) {
  if (encoded.size() > 3 * kMaxSecretBytes)
    throw ConfigError("invalid PKCS#11 URI (URI with pin-value): the pin-value is too long");
  SecretString pin = SecretString::with_capacity(std::min(encoded.size(), kMaxSecretBytes));
  std::span<char> out = pin.buffer();
  std::size_t n = 0;
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    char c = encoded[i];
    if (c == '%') {
      const int hi = i + 2 < encoded.size() ? hex_digit(encoded[i + 1]) : -1;
      const int lo = i + 2 < encoded.size() ? hex_digit(encoded[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        throw ConfigError("invalid PKCS#11 URI (URI with pin-value): bad %-escape in the pin-value");
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (n == out.size())
      throw ConfigError("invalid PKCS#11 URI (URI with pin-value): the pin-value is longer than " +
                        std::to_string(kMaxSecretBytes) + " bytes");
    out[n++] = c;
  }
  pin.resize(n);
  return pin;
}

}  // namespace

TokenUriText::TokenUriText(std::string text) {
  WipeOnExit wipe_text(text);  // it may carry a pin-value
  const std::size_t query = text.find('?');
  if (query == std::string::npos) {
    text_.assign(text);
    return;
  }
  // Query attributes are separated by '&' (RFC 7512); the pin-value one is taken out.
  std::string kept = text.substr(0, query);
  char separator = '?';
  for (std::size_t start = query + 1; start <= text.size();) {
    std::size_t end = text.find('&', start);
    if (end == std::string::npos) end = text.size();
    std::string_view attribute(text.data() + start, end - start);
    if (attribute.starts_with(kPinValue)) {
      if (pin_) throw ConfigError("invalid PKCS#11 URI (URI with pin-value): more than one pin-value");
      pin_ = std::make_shared<const SecretString>(decode_pin(attribute.substr(kPinValue.size())));
    } else if (!attribute.empty() || end < text.size()) {
      kept += separator;
      kept.append(attribute);
      separator = '&';
    }
    start = end + 1;
  }
  text_ = std::move(kept);
}

std::ostream& operator<<(std::ostream& out, const TokenUriText& uri) { return out << uri.text(); }

struct TokenUri::Impl {
  P11KitUri* uri = nullptr;
  std::string text;                          // as given, without the pin-value
  std::shared_ptr<const SecretString> pin;   // the pin-value, if any
  ~Impl() {
    if (uri != nullptr) p11_kit_uri_free(uri);
  }
};

TokenUri TokenUri::parse(const TokenUriText& text) {
  auto impl = std::make_shared<Impl>();
  impl->uri = p11_kit_uri_new();
  if (impl->uri == nullptr) throw std::bad_alloc();
  impl->text = text.text();
  impl->pin = text.pin_value();
  const std::string& shown = impl->text;
  int rc = p11_kit_uri_parse(shown.c_str(), P11_KIT_URI_FOR_ANY, impl->uri);
  if (rc != P11_KIT_URI_OK) {
    // The query is not quoted: a PIN pasted under a misspelt attribute name stays out.
    const std::size_t query = shown.find('?');
    throw ConfigError("invalid PKCS#11 URI '" + (query == std::string::npos ? shown : shown.substr(0, query) + "?...") +
                      "': " + p11_kit_uri_message(rc));
  }
  // A pin-value spelled in a way p11-kit reads but the split above does not (an escaped
  // attribute name): p11-kit would hold the PIN, and the text would show it.
  if (p11_kit_uri_get_pin_value(impl->uri) != nullptr)
    throw ConfigError("invalid PKCS#11 URI (URI with pin-value): write its pin-value as a plain pin-value=... query attribute");
  CK_ULONG n_attrs = 0;
  (void)p11_kit_uri_get_attributes(impl->uri, &n_attrs);
  if (n_attrs > 0) {
    throw ConfigError("PKCS#11 URI '" + shown.substr(0, shown.find('?')) +
                      "' names objects; keysvc needs a token URI such as pkcs11:token=LABEL");
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
  if (!impl_->pin) return std::nullopt;
  return SecretString::copy_of(impl_->pin->reveal());
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
