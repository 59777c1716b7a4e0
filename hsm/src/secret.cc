#include "keysvc/hsm/secret.h"

#include <openssl/crypto.h>

#include <stdexcept>
#include <string>

#include "keysvc/hsm/thread_residue.h"

namespace keysvc::hsm {

void wipe(std::span<std::byte> bytes) noexcept {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
  clear_vector_registers();  // the copies the bytes left in this thread's registers
}

void wipe(std::string& s) noexcept {
  // The whole capacity: a shrink or an earlier longer value may have left bytes.
  s.resize(s.capacity());
  wipe(s.data(), s.size());
  s.clear();
}

SecretString SecretString::with_capacity(std::size_t capacity) {
  if (capacity > kMaxSecretBytes)
    throw std::length_error("secret longer than " + std::to_string(kMaxSecretBytes) + " bytes");
  SecretString s;
  if (capacity > 0) s.block_ = secure_alloc(capacity, OnFork::kKeep);
  return s;
}

SecretString SecretString::copy_of(std::string_view value) {
  SecretString s = with_capacity(value.size());
  value.copy(s.buffer().data(), value.size());
  s.size_ = value.size();
  return s;
}

SecretString::SecretString(std::string value) {
  WipeOnExit wipe_value(value);
  *this = copy_of(value);
}

void SecretString::resize(std::size_t n) {
  if (n > capacity()) throw std::length_error("SecretString::resize beyond its capacity");
  auto room = buffer();
  wipe(room.data() + n, room.size() - n);
  size_ = n;
}

}  // namespace keysvc::hsm
