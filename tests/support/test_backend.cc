#include "test_backend.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/session.h"
#include "keysvc/hsm/token.h"

namespace keysvc::test {

void write_test_file(const std::string& path, const std::string& text, unsigned mode) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
}

std::string make_test_dir(const std::string& prefix) {
  const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
  std::string root = base && *base ? base : "/tmp";
  std::filesystem::create_directories(root);
  std::string tmpl = root + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed in " + root);
  return std::filesystem::absolute(tmpl).string();
}

Config TestBackend::config() const { return Config::load_file(config_path()); }

void TestBackend::write_pin_and_config(const std::string& extra_hsm) const {
  write_test_file(pin_path(), pin() + "\n", 0600);
  write_test_file(config_path(),
                  "[hsm]\nmodule = \"" + module() + "\"\ntoken = \"" + token_uri() +
                      "\"\npin = \"file:pin\"\nsessions = 4\n" + extra_hsm +
                      "\n[tickets]\nper_handshake = 2\n"
                      // No pre-derived issue pool: tests count HSM calls per ticket; the
                      // pool's own tests turn it on.
                      "issue_pool = 0\n",
                  0600);
}

namespace {
// A logged-in read-write session on the backend's token, in this process.
struct Opened {
  hsm::Token token;
  hsm::Session session;
  Opened(const TestBackend& b)
      : token(hsm::Token::find(hsm::Module::load(b.module()), hsm::TokenUri::parse(b.token_uri()))),
        session(token, true) {
    session.login(CKU_USER, hsm::SecretString(b.pin()));
  }
};
}  // namespace

void TestBackend::refresh_view() const {
  auto module = hsm::Module::load(this->module());
  hsm::Token token = hsm::Token::find(module, hsm::TokenUri::parse(token_uri()));
  if (token.profile().rescan_needs_reinitialize && !module->restart(std::chrono::seconds(5)))
    throw std::runtime_error(name() + ": cannot re-initialise the module in the test process");
}

void TestBackend::clear() const {
  refresh_view();
  Opened o(*this);
  for (auto h : hsm::find_objects(o.session, {})) hsm::destroy_object(o.session, h);
}

std::vector<std::string> TestBackend::objects() const {
  refresh_view();
  Opened o(*this);
  hsm::Session& session = o.session;
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
    // tpm2-pkcs11 answers a secret key's CKA_VALUE with an empty value, not an error.
    if (auto value = optional_attribute(CKA_VALUE); value && !value->empty())
      line += " value=" + std::string(value->begin(), value->end());
    out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace keysvc::test
