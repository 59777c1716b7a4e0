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

#include "keysvc/config.h"

namespace keysvc::test {

inline constexpr char kSoftHsmModule[] = "/usr/lib/softhsm/libsofthsm2.so";

class TestToken {
 public:
  static TestToken& get();

  const std::string& dir() const { return dir_; }
  std::string config_path() const { return dir_ + "/keysvc.toml"; }
  std::string pin_path() const { return dir_ + "/pin"; }
  const std::string& pin() const { return pin_; }
  const std::string& so_pin() const { return so_pin_; }
  std::string token_uri() const { return "pkcs11:token=keysvc-test"; }

  // The config in keysvc.toml (module, token, pin = file:DIR/pin).
  Config config() const;

  // Destroys every object on the token, so a test starts from an empty ring.
  void clear() const;

  // Every object on the token as "CKA_LABEL id=HEX(CKA_ID)" plus the value of data
  // objects (generation and revocation records), sorted: equal before and after a
  // command means the command changed nothing in the token.
  std::vector<std::string> objects() const;

 private:
  TestToken();
  ~TestToken();
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
