#include "adapter_state.h"

#include <new>

namespace keysvc::openssl {
namespace {

void free_state(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<AdapterState*>(ptr); }

void free_connection(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<Connection*>(ptr); }

int connection_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_connection);
  return index;
}

}  // namespace

int state_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_state);
  return index;
}

AdapterState* state_of(const SSL_CTX* ctx) {
  return ctx == nullptr ? nullptr : static_cast<AdapterState*>(SSL_CTX_get_ex_data(ctx, state_index()));
}

Connection* connection_of(const SSL* s, bool make) {
  auto* c = static_cast<Connection*>(SSL_get_ex_data(s, connection_index()));
  if (c != nullptr || !make) return c;
  c = new (std::nothrow) Connection{};
  if (c == nullptr || SSL_set_ex_data(const_cast<SSL*>(s), connection_index(), c) != 1) {
    delete c;
    return nullptr;
  }
  return c;
}

}  // namespace keysvc::openssl
