#include "known_secrets.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

namespace keysvc::test {

namespace {

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (auto b : bytes) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

void append(const char* kind, std::span<const std::uint8_t> bytes) noexcept {
  static std::mutex mutex;
  try {
    const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
    if (base == nullptr || *base == '\0') return;
    std::string dir = std::string(base) + "/secrets";
    std::lock_guard lock(mutex);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/" + std::to_string(::getpid()) + ".txt", std::ios::app)
        << kind << ' ' << to_hex(bytes) << '\n';
  } catch (...) {
    // A registry that cannot be written only weakens the scan; it must not fail a test.
  }
}

}  // namespace

void remember_secret_text(std::string_view text) noexcept {
  append("text", {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

void remember_secret_bytes(std::span<const std::uint8_t> bytes) noexcept { append("bytes", bytes); }

void remember_epoch_key(std::span<const std::uint8_t> bytes) noexcept { append("epoch", bytes); }

}  // namespace keysvc::test
