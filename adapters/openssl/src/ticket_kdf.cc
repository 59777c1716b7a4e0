// KEYSVC-TICKET-KDF: the provider algorithm behind the ticket callback. See
// include/keysvc/openssl/ticket_kdf.h for its parameters.
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "keysvc/hsm/secure_memory.h"
#include "keysvc/openssl/ticket_kdf.h"
#include "provider.h"

namespace keysvc::openssl {

namespace {

struct KdfContext {
  std::shared_ptr<TicketKeyService> service;
  enum class Operation { kNone, kIssue, kOpen } operation = Operation::kNone;
  KeyName name{};
  Iv iv{};
  bool have_name = false;
  bool have_iv = false;
  int open_status = 0;

  // Also what a context parked between tickets keeps (kdf_context_pool.h): nothing.
  void reset() {
    operation = Operation::kNone;
    name = {};
    iv = {};
    have_name = have_iv = false;
    open_status = 0;
  }
};

void* kdf_new(void* provctx) {
  auto service = static_cast<ProviderContext*>(provctx)->service.lock();
  if (!service) return nullptr;
  return new (std::nothrow) KdfContext{std::move(service)};
}

void kdf_free(void* vctx) { delete static_cast<KdfContext*>(vctx); }

void kdf_reset(void* vctx) { static_cast<KdfContext*>(vctx)->reset(); }

// Reads a fixed-size octet parameter; false if present with the wrong size.
template <std::size_t N>
bool read_fixed(const OSSL_PARAM* p, std::array<std::uint8_t, N>& out, bool& have) {
  if (p == nullptr) return true;
  const void* data = nullptr;
  std::size_t len = 0;
  if (!OSSL_PARAM_get_octet_string_ptr(p, &data, &len) || len != N) return false;
  std::memcpy(out.data(), data, N);
  have = true;
  return true;
}

int kdf_set_ctx_params(void* vctx, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<KdfContext*>(vctx);
  if (params == nullptr) return 1;
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, KEYSVC_KDF_PARAM_OPERATION)) {
    const char* op = nullptr;
    if (!OSSL_PARAM_get_utf8_string_ptr(p, &op)) return 0;
    if (std::strcmp(op, "issue") == 0) ctx->operation = KdfContext::Operation::kIssue;
    else if (std::strcmp(op, "open") == 0) ctx->operation = KdfContext::Operation::kOpen;
    else return 0;
  }
  return read_fixed(OSSL_PARAM_locate_const(params, KEYSVC_KDF_PARAM_KEY_NAME), ctx->name, ctx->have_name) &&
         read_fixed(OSSL_PARAM_locate_const(params, KEYSVC_KDF_PARAM_IV), ctx->iv, ctx->have_iv);
}

const OSSL_PARAM* kdf_settable_ctx_params(void*, void*) {
  static const OSSL_PARAM params[] = {
      OSSL_PARAM_utf8_string(KEYSVC_KDF_PARAM_OPERATION, nullptr, 0),
      OSSL_PARAM_octet_string(KEYSVC_KDF_PARAM_KEY_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(KEYSVC_KDF_PARAM_IV, nullptr, 0),
      OSSL_PARAM_END,
  };
  return params;
}

int kdf_derive_keys(void* vctx, unsigned char* out, std::size_t outlen, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<KdfContext*>(vctx);
  if (!kdf_set_ctx_params(vctx, params)) return 0;
  switch (ctx->operation) {
    case KdfContext::Operation::kIssue: {
      static_assert(KEYSVC_KDF_ISSUE_OUTPUT_BYTES == kKeyNameBytes + kIvBytes + 2 * kTicketKeyBytes);
      if (outlen != KEYSVC_KDF_ISSUE_OUTPUT_BYTES) return 0;
      // The thread's keys (hsm::ThreadScratch: no secure block taken per ticket), wiped
      // on return. OpenSSL never nests ticket callbacks on one thread.
      const hsm::ThreadScratch<IssueKeys> scratch;
      if (!scratch) return 0;
      IssueKeys& keys = *scratch;
      if (!ctx->service->derive_for_issue(keys)) return 0;
      unsigned char* o = out;
      o = std::copy(keys.name.begin(), keys.name.end(), o);
      o = std::copy(keys.iv.begin(), keys.iv.end(), o);
      o = std::copy(keys.keys.aes_key.begin(), keys.keys.aes_key.end(), o);
      std::copy(keys.keys.hmac_key.begin(), keys.keys.hmac_key.end(), o);
      return 1;
    }
    case KdfContext::Operation::kOpen: {
      static_assert(KEYSVC_KDF_OPEN_OUTPUT_BYTES == 2 * kTicketKeyBytes);
      if (outlen != KEYSVC_KDF_OPEN_OUTPUT_BYTES || !ctx->have_name || !ctx->have_iv) return 0;
      const hsm::ThreadScratch<TicketKeys> scratch;  // as for an issue
      if (!scratch) return 0;
      TicketKeys& keys = *scratch;
      switch (ctx->service->derive_for_open(ctx->name, ctx->iv, keys)) {
        case OpenStatus::kOk:
          ctx->open_status = KEYSVC_OPEN_OK;
          break;
        case OpenStatus::kOkRenew:
          ctx->open_status = KEYSVC_OPEN_RENEW;
          break;
        case OpenStatus::kUnknownKey:
          ctx->open_status = KEYSVC_OPEN_UNKNOWN_KEY;
          return 0;
        case OpenStatus::kRetired:
          ctx->open_status = KEYSVC_OPEN_RETIRED;
          return 0;
        case OpenStatus::kHsmError:
          ctx->open_status = KEYSVC_OPEN_HSM_ERROR;
          return 0;
      }
      std::copy(keys.hmac_key.begin(), keys.hmac_key.end(),
                std::copy(keys.aes_key.begin(), keys.aes_key.end(), out));
      return 1;
    }
    case KdfContext::Operation::kNone:
      return 0;
  }
  return 0;
}

// OpenSSL calls in from C: nothing may escape (the key buffers take secure memory,
// which can run out: then no ticket this time).
int kdf_derive(void* vctx, unsigned char* out, std::size_t outlen, const OSSL_PARAM params[]) {
  try {
    return kdf_derive_keys(vctx, out, outlen, params);
  } catch (const std::exception&) {
    return 0;
  }
}

int kdf_get_ctx_params(void* vctx, OSSL_PARAM params[]) {
  auto* ctx = static_cast<KdfContext*>(vctx);
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, KEYSVC_KDF_PARAM_OPEN_STATUS)) {
    if (!OSSL_PARAM_set_int(p, ctx->open_status)) return 0;
  }
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, KEYSVC_KDF_PARAM_ENCRYPT_KEY_NAME)) {
    auto name = ctx->service->encrypt_key_name();
    if (!name || !OSSL_PARAM_set_octet_string(p, name->data(), name->size())) return 0;
  }
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_KDF_PARAM_SIZE)) {
    std::size_t size = ctx->operation == KdfContext::Operation::kIssue ? KEYSVC_KDF_ISSUE_OUTPUT_BYTES
                                                                        : KEYSVC_KDF_OPEN_OUTPUT_BYTES;
    if (!OSSL_PARAM_set_size_t(p, size)) return 0;
  }
  return 1;
}

const OSSL_PARAM* kdf_gettable_ctx_params(void*, void*) {
  static const OSSL_PARAM params[] = {
      OSSL_PARAM_int(KEYSVC_KDF_PARAM_OPEN_STATUS, nullptr),
      OSSL_PARAM_octet_string(KEYSVC_KDF_PARAM_ENCRYPT_KEY_NAME, nullptr, 0),
      OSSL_PARAM_size_t(OSSL_KDF_PARAM_SIZE, nullptr),
      OSSL_PARAM_END,
  };
  return params;
}

}  // namespace

const OSSL_DISPATCH kTicketKdfFunctions[] = {
    {OSSL_FUNC_KDF_NEWCTX, reinterpret_cast<void (*)()>(kdf_new)},
    {OSSL_FUNC_KDF_FREECTX, reinterpret_cast<void (*)()>(kdf_free)},
    {OSSL_FUNC_KDF_RESET, reinterpret_cast<void (*)()>(kdf_reset)},
    {OSSL_FUNC_KDF_DERIVE, reinterpret_cast<void (*)()>(kdf_derive)},
    {OSSL_FUNC_KDF_SETTABLE_CTX_PARAMS, reinterpret_cast<void (*)()>(kdf_settable_ctx_params)},
    {OSSL_FUNC_KDF_SET_CTX_PARAMS, reinterpret_cast<void (*)()>(kdf_set_ctx_params)},
    {OSSL_FUNC_KDF_GETTABLE_CTX_PARAMS, reinterpret_cast<void (*)()>(kdf_gettable_ctx_params)},
    {OSSL_FUNC_KDF_GET_CTX_PARAMS, reinterpret_cast<void (*)()>(kdf_get_ctx_params)},
    {0, nullptr},
};

}  // namespace keysvc::openssl
