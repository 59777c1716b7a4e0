#include "ossl.h"

#include <openssl/err.h>

#include <array>

namespace tls_server {

std::string take_openssl_error() {
  unsigned long last = 0;
  while (unsigned long e = ERR_get_error()) last = e;
  if (last == 0) return "unknown error";
  std::array<char, 256> buf{};
  ERR_error_string_n(last, buf.data(), buf.size());
  return buf.data();
}

}  // namespace tls_server
