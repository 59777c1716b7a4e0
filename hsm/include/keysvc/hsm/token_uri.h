// A PKCS#11 URI (RFC 7512) that selects a token, parsed by p11-kit's parser.
//
//   pkcs11:token=keysvc
//   pkcs11:token=keysvc;serial=1234?pin-source=file:/etc/keysvc/pin
//   pkcs11:model=SoftHSM%20v2;token=keysvc?module-path=/usr/lib/softhsm/libsofthsm2.so
//
// Only token attributes are used for matching (token, manufacturer, model, serial);
// object attributes are refused, since keysvc chooses its own objects.
#pragma once

#include <p11-kit/pkcs11.h>

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "keysvc/hsm/secret.h"

namespace keysvc::hsm {

// A token URI as text (a config value), whose pin-value, if any, is taken out of the
// text into secure memory as soon as it is made: the text never holds the PIN, so
// nothing that keeps, copies or prints the text (a Config, `keysvcctl status`) does.
// Converts implicitly from and to strings, so it can stand where a URI string did.
class TokenUriText {
 public:
  TokenUriText() = default;
  // Takes `text` apart: a query attribute pin-value=... (percent-decoded) goes to
  // pin_value(), the rest stays as text; `text`'s buffer is wiped. Throws ConfigError
  // (never quoting the PIN) for a bad %-escape in it, a second pin-value or a PIN longer
  // than kMaxSecretBytes.
  TokenUriText(std::string text);  // NOLINT(google-explicit-constructor): stands for a string
  TokenUriText(const char* text) : TokenUriText(std::string(text)) {}  // NOLINT
  TokenUriText(std::string_view text) : TokenUriText(std::string(text)) {}  // NOLINT

  // The URI without its pin-value.
  const std::string& text() const noexcept { return text_; }
  operator const std::string&() const noexcept { return text_; }  // NOLINT
  operator std::string_view() const noexcept { return text_; }    // NOLINT
  bool empty() const noexcept { return text_.empty(); }
  // The pin-value, or nullptr if the URI had none. Shared by copies.
  const std::shared_ptr<const SecretString>& pin_value() const noexcept { return pin_; }

  friend bool operator==(const TokenUriText& a, std::string_view b) noexcept { return a.text_ == b; }

 private:
  std::string text_;
  std::shared_ptr<const SecretString> pin_;
};

std::ostream& operator<<(std::ostream& out, const TokenUriText& uri);

class TokenUri {
 public:
  // Throws ConfigError with p11-kit's reason for a malformed URI. Takes any string (it
  // converts to TokenUriText): a pin-value never reaches p11-kit, it is taken out first.
  static TokenUri parse(const TokenUriText& uri);

  bool matches(const CK_TOKEN_INFO& info) const;

  // Query attributes, if present.
  std::optional<std::string> pin_source() const;
  std::optional<SecretString> pin_value() const;
  std::optional<std::string> module_path() const;

  // The URI as given, for messages. Never contains pin-value (it is refused in
  // messages: see describe()).
  std::string describe() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Trims the blank padding of a fixed-size PKCS#11 string field (label, serial...).
std::string trim_padded(const unsigned char* field, std::size_t size);

}  // namespace keysvc::hsm
