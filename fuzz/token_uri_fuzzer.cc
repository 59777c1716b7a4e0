// Fuzz target: PKCS#11 URI (RFC 7512, p11-kit's parser behind hsm::TokenUri) and PIN
// source handling (hsm::PinSource). Bad input must end in one ConfigError; messages
// (describe()) must never carry a pin-value.
#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/token_uri.h"

namespace {

CK_TOKEN_INFO softhsm_like_token() {
  CK_TOKEN_INFO info{};
  auto put = [](unsigned char* field, std::size_t size, const char* text) {
    std::memset(field, ' ', size);
    std::memcpy(field, text, std::min(size, std::strlen(text)));
  };
  put(info.label, sizeof info.label, "keysvc");
  put(info.manufacturerID, sizeof info.manufacturerID, "SoftHSM project");
  put(info.model, sizeof info.model, "SoftHSM v2");
  put(info.serialNumber, sizeof info.serialNumber, "0123456789abcdef");
  return info;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace keysvc::hsm;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  static const CK_TOKEN_INFO info = softhsm_like_token();
  try {
    TokenUri uri = TokenUri::parse(text);
    (void)uri.matches(info);
    (void)uri.module_path();
    std::string described = uri.describe();
    // The printable form of a URI with a pin-value carries no pin-value.
    if (uri.pin_value() && !described.empty() && TokenUri::parse(described).pin_value()) __builtin_trap();
    if (auto source = uri.pin_source()) {
      try {
        (void)PinSource::parse(*source).describe();
      } catch (const ConfigError&) {
      }
    }
  } catch (const ConfigError&) {
  }
  try {
    // Never read(): the fuzzer would name files and variables of this process.
    (void)PinSource::parse(text).describe();
  } catch (const ConfigError&) {
  }
  return 0;
}
