#include "test_token.h"

#include "keysvc/token_gateway.h"

#include "keysvc/hsm/token_uri.h"

#include "known_secrets.h"

#include <openssl/rand.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "keysvc/hsm/module.h"
#include "keysvc/hsm/token.h"

namespace keysvc::test {

std::string random_text(std::size_t n) {
  static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string s(n, 'x');
  for (auto& c : s) {
    unsigned char b = 0;
    if (RAND_bytes(&b, 1) != 1) throw std::runtime_error("RAND_bytes");
    c = alphabet[b % (sizeof alphabet - 1)];
  }
  return s;
}

TestToken& TestToken::get() {
  static TestToken* token = new TestToken();  // lives until exit; removes its folder then
  static struct Cleanup {
    ~Cleanup() { std::filesystem::remove_all(token->dir_); }
  } cleanup;
  return *token;
}

TestToken::TestToken() {
  dir_ = make_test_dir("keysvc-test");
  std::filesystem::create_directories(dir_ + "/tokens");
  write_test_file(dir_ + "/softhsm2.conf",
                  "directories.tokendir = " + dir_ + "/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
                  "slots.removable = false\n",
                  0600);
  ::setenv("SOFTHSM2_CONF", (dir_ + "/softhsm2.conf").c_str(), 1);

  pin_ = random_text(16);
  so_pin_ = random_text(16);
  remember_secret_text(pin_);
  remember_secret_text(so_pin_);
  auto module = hsm::Module::load(kSoftHsmModule);
  hsm::Token::init_free_slot(module, "keysvc-test", hsm::SecretString(so_pin_), hsm::SecretString(pin_));
  write_pin_and_config();
}

TestToken::~TestToken() = default;

std::unique_ptr<hsm::SessionPool> open_pool(const Config& config) { return TokenGateway::open_bare_pool(config); }

}  // namespace keysvc::test
