// A real SoftHSM2 token made for this test process.
//
// The first call to TestToken::get() creates a private folder (under $KEYSVC_TEST_TMPDIR
// or /tmp) with its own softhsm2.conf, points SOFTHSM2_CONF at it, initialises a token
// labelled "keysvc-test" through PKCS#11 (C_InitToken/C_InitPIN, random PINs), and
// writes DIR/pin (0600) and DIR/keysvc.toml. The folder is removed at exit.
// Tests never touch /etc/softhsm or /var/lib/softhsm.
#pragma once

#include <memory>

#include "keysvc/hsm/session_pool.h"

#include <string>
#include <vector>

#include "test_backend.h"

namespace keysvc::test {

inline constexpr char kSoftHsmModule[] = "/usr/lib/softhsm/libsofthsm2.so";

class TestToken : public TestBackend {
 public:
  static TestToken& get();

  std::string name() const override { return "softhsm"; }
  const std::string& dir() const override { return dir_; }
  std::string module() const override { return kSoftHsmModule; }
  std::string token_uri() const override { return "pkcs11:token=keysvc-test"; }
  const std::string& pin() const override { return pin_; }
  const std::string& so_pin() const { return so_pin_; }

 private:
  TestToken();
  ~TestToken() override;
  std::string dir_;
  std::string pin_;
  std::string so_pin_;
};

// A session pool opened straight on `config`'s token and logged in, for tests that set
// up or inspect the token beside keysvc, as pkcs11-tool would. keysvc itself reaches the
// token only through its TokenGateway.
std::unique_ptr<hsm::SessionPool> open_pool(const Config& config);

// Random printable string (for PINs and labels).
std::string random_text(std::size_t n);

}  // namespace keysvc::test
