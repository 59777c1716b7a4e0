// The C++ side of keysvc_bridge.h.
#include "keysvc_bridge.h"

#include <cinttypes>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include "keysvc/config.h"
#include "keysvc/openssl/ticket_adapter.h"

extern "C" int keysvc_nginx_check_config(const char* path, char* err, size_t err_len) {
  try {
    if (path == nullptr) throw std::invalid_argument("no keysvc_config path");
    (void)keysvc::Config::load_file(path);
    return 1;
  } catch (const std::exception& e) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", e.what());
    return 0;
  }
}

extern "C" void keysvc_nginx_counters(const SSL_CTX* ctx, char* out, size_t out_len) {
  if (out == nullptr || out_len == 0) return;
  const keysvc::openssl::TicketCallbackCounters c = keysvc::openssl::counters(ctx);
  std::snprintf(out, out_len,
                "issued=%" PRIu64 " resumed=%" PRIu64 " renewed=%" PRIu64 " issue_failed=%" PRIu64
                " unknown_key=%" PRIu64 " retired_key=%" PRIu64 " hsm_error=%" PRIu64 " rejected=%" PRIu64,
                c.issued, c.resumed, c.renewed, c.issue_failed, c.unknown_key, c.retired_key, c.hsm_error,
                c.rejected_bad_ticket + c.rejected_unopened + c.rejected_too_old);
}
