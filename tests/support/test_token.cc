#include "test_token.h"

#include "keysvc/token_gateway.h"

#include "keysvc/hsm/token_uri.h"

#include "known_secrets.h"

#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/session.h"
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

namespace {
void write_file(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  ::chmod(path.c_str(), mode);
}
}  // namespace

TestToken& TestToken::get() {
  static TestToken* token = new TestToken();  // lives until exit; removes its folder then
  static struct Cleanup {
    ~Cleanup() { std::filesystem::remove_all(token->dir_); }
  } cleanup;
  return *token;
}

TestToken::TestToken() {
  const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
  std::string root = base && *base ? base : "/tmp";
  std::filesystem::create_directories(root);
  std::string tmpl = root + "/keysvc-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed in " + root);
  dir_ = std::filesystem::absolute(tmpl).string();
  std::filesystem::create_directories(dir_ + "/tokens");
  write_file(dir_ + "/softhsm2.conf",
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
  write_file(pin_path(), pin_ + "\n", 0600);
  write_file(config_path(),
             std::string("[hsm]\nmodule = \"") + kSoftHsmModule + "\"\ntoken = \"" + token_uri() +
                 "\"\npin = \"file:pin\"\nsessions = 4\n\n[tickets]\nper_handshake = 2\n"
                 // No pre-derived issue pool: tests count HSM calls per ticket; the
                 // pool's own tests turn it on.
                 "issue_pool = 0\n",
             0600);
}

TestToken::~TestToken() = default;

Config TestToken::config() const { return Config::load_file(config_path()); }

void TestToken::clear() const {
  auto module = hsm::Module::load(kSoftHsmModule);
  hsm::Token token = hsm::Token::find(module, hsm::TokenUri::parse(token_uri()));
  hsm::Session session(token, true);
  session.login(CKU_USER, hsm::SecretString(pin_));
  for (auto h : hsm::find_objects(session, {})) hsm::destroy_object(session, h);
}

std::vector<std::string> TestToken::objects() const {
  auto module = hsm::Module::load(kSoftHsmModule);
  hsm::Token token = hsm::Token::find(module, hsm::TokenUri::parse(token_uri()));
  hsm::Session session(token, false);
  session.login(CKU_USER, hsm::SecretString(pin_));
  std::vector<std::string> out;
  for (auto h : hsm::find_objects(session, {})) {
    auto label = hsm::get_attribute(session, h, CKA_LABEL);
    std::string line(label.begin(), label.end());
    // Data objects have no CKA_ID; keys' CKA_VALUE is sensitive: each read is optional.
    auto optional_attribute = [&](CK_ATTRIBUTE_TYPE type) -> std::optional<hsm::Bytes> {
      try {
        return hsm::get_attribute(session, h, type);
      } catch (const hsm::Pkcs11Error&) {
        return std::nullopt;
      }
    };
    if (auto id = optional_attribute(CKA_ID)) {
      line += " id=";
      for (auto b : *id) {
        static const char* digits = "0123456789abcdef";
        line += digits[b >> 4];
        line += digits[b & 15];
      }
    }
    if (auto value = optional_attribute(CKA_VALUE)) line += " value=" + std::string(value->begin(), value->end());
    out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<hsm::SessionPool> open_pool(const Config& config) { return TokenGateway::open_bare_pool(config); }

}  // namespace keysvc::test
