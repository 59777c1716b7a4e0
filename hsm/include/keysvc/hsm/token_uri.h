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

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "keysvc/hsm/secret.h"

namespace keysvc::hsm {

class TokenUri {
 public:
  // Throws ConfigError with p11-kit's reason for a malformed URI.
  static TokenUri parse(std::string_view uri);

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
