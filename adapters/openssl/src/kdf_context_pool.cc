#include "kdf_context_pool.h"

#include <functional>
#include <thread>

namespace keysvc::openssl {
namespace {

std::size_t first_slot(std::size_t slots) {
  thread_local const std::size_t start = std::hash<std::thread::id>{}(std::this_thread::get_id());
  return start % slots;
}

}  // namespace

KdfContextPool::~KdfContextPool() {
  for (auto& slot : slots_) EVP_KDF_CTX_free(slot.exchange(nullptr));
}

EVP_KDF_CTX* KdfContextPool::take() noexcept {
  const std::size_t start = first_slot(kSlots);
  for (std::size_t k = 0; k < kSlots; ++k) {
    auto& slot = slots_[(start + k) % kSlots];
    if (slot.load(std::memory_order_relaxed) == nullptr) continue;
    if (EVP_KDF_CTX* ctx = slot.exchange(nullptr, std::memory_order_acquire)) return ctx;
  }
  return EVP_KDF_CTX_new(kdf_);
}

void KdfContextPool::give_back(EVP_KDF_CTX* ctx) noexcept {
  EVP_KDF_CTX_reset(ctx);
  const std::size_t start = first_slot(kSlots);
  for (std::size_t k = 0; k < kSlots; ++k) {
    EVP_KDF_CTX* empty = nullptr;
    if (slots_[(start + k) % kSlots].compare_exchange_strong(empty, ctx, std::memory_order_release,
                                                             std::memory_order_relaxed))
      return;
  }
  EVP_KDF_CTX_free(ctx);
}

}  // namespace keysvc::openssl
