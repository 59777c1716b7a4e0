// What the C API's files (c_api.cc, c_api_preload.cc) share: the service handle, and
// the guard every C entry point runs under.
#pragma once

#include <openssl/err.h>

#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>

#include "keysvc/ticket_key_service.h"

struct keysvc_service {
  std::shared_ptr<keysvc::TicketKeyService> service;
};

namespace keysvc::openssl::detail {

// Copies `message` into the caller's buffer (truncated, NUL-terminated) if it has one.
inline void set_error(char* err, std::size_t err_len, const char* message) noexcept {
  if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", message);
}

// Runs `body` for a C entry point: exceptions become `on_error` plus a one-line message
// in err, and whatever the call put on this thread's OpenSSL error queue is removed
// (PKCS#11 modules, libp11 and OpenSSL's own initialisation leave entries there, e.g.
// a failed attempt to load the rdrand engine; nginx logs them as "ignoring stale global
// SSL error"). Entries that were there before the call stay.
template <typename Result, typename Body>
Result c_entry(char* err, std::size_t err_len, Result on_error, Body&& body) noexcept {
  ERR_set_mark();
  Result result = on_error;
  try {
    result = body();
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
  } catch (...) {
    set_error(err, err_len, "unexpected error");
  }
  ERR_pop_to_mark();
  return result;
}

}  // namespace keysvc::openssl::detail
