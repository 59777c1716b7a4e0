#include "provider.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>

#include "keysvc/openssl/ticket_kdf.h"

namespace keysvc::openssl {

namespace {

// Services waiting for their provider's init function, by provider name. OpenSSL's
// init callback has no user argument, so the instance finds its service by its name.
std::mutex g_pending_mutex;
std::map<std::string, std::shared_ptr<TicketKeyService>>& pending() {
  static auto* m = new std::map<std::string, std::shared_ptr<TicketKeyService>>();
  return *m;
}

const OSSL_ALGORITHM* query_operation(void* provctx, int operation_id, int* no_cache) {
  *no_cache = 0;
  return operation_id == OSSL_OP_KDF ? static_cast<ProviderContext*>(provctx)->kdfs : nullptr;
}

void teardown(void* provctx) { delete static_cast<ProviderContext*>(provctx); }

const OSSL_PARAM* gettable_params(void*) {
  static const OSSL_PARAM params[] = {
      OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, nullptr, 0),
      OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, nullptr, 0),
      OSSL_PARAM_END,
  };
  return params;
}

int get_params(void*, OSSL_PARAM params[]) {
  OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
  if (p != nullptr && !OSSL_PARAM_set_utf8_ptr(p, "keysvc ticket key provider")) return 0;
  p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
  if (p != nullptr && !OSSL_PARAM_set_int(p, 1)) return 0;
  return 1;
}

const OSSL_DISPATCH kProviderFunctions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, reinterpret_cast<void (*)()>(teardown)},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, reinterpret_cast<void (*)()>(query_operation)},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, reinterpret_cast<void (*)()>(gettable_params)},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, reinterpret_cast<void (*)()>(get_params)},
    {0, nullptr},
};

int provider_init(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in, const OSSL_DISPATCH** out,
                  void** provctx) {
  OSSL_FUNC_core_get_params_fn* core_get_params = nullptr;
  for (; in != nullptr && in->function_id != 0; ++in) {
    if (in->function_id == OSSL_FUNC_CORE_GET_PARAMS) core_get_params = OSSL_FUNC_core_get_params(in);
  }
  if (core_get_params == nullptr) return 0;
  const char* name = nullptr;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_ptr(OSSL_PROV_PARAM_CORE_PROV_NAME, const_cast<char**>(&name), 0),
      OSSL_PARAM_construct_end(),
  };
  if (!core_get_params(handle, params) || name == nullptr) return 0;

  std::shared_ptr<TicketKeyService> service;
  {
    std::lock_guard lock(g_pending_mutex);
    auto it = pending().find(name);
    if (it == pending().end()) return 0;
    service = it->second;
  }
  auto* ctx = new ProviderContext{std::move(service), std::string("provider=") + name, {}};
  ctx->kdfs[0] = {KEYSVC_TICKET_KDF_NAME, ctx->properties.c_str(), kTicketKdfFunctions,
                  "keysvc per-ticket key derivation in a PKCS#11 token"};
  ctx->kdfs[1] = {nullptr, nullptr, nullptr, nullptr};
  *provctx = ctx;
  *out = kProviderFunctions;
  return 1;
}

}  // namespace

LoadedProvider load_provider(OSSL_LIB_CTX* libctx, std::shared_ptr<TicketKeyService> service) {
  static std::atomic<unsigned> next_id{0};
  LoadedProvider loaded;
  loaded.name = "keysvc-" + std::to_string(++next_id);
  {
    std::lock_guard lock(g_pending_mutex);
    pending()[loaded.name] = std::move(service);
  }
  // retain_fallbacks=1: loading our provider must not stop OpenSSL from loading its
  // default provider into a libctx that has not activated one yet.
  if (OSSL_PROVIDER_add_builtin(libctx, loaded.name.c_str(), provider_init) == 1)
    loaded.provider = OSSL_PROVIDER_try_load(libctx, loaded.name.c_str(), 1);
  {
    std::lock_guard lock(g_pending_mutex);
    pending().erase(loaded.name);
  }
  if (loaded.provider == nullptr) throw std::runtime_error("cannot load keysvc's OpenSSL provider " + loaded.name);
  return loaded;
}

}  // namespace keysvc::openssl
