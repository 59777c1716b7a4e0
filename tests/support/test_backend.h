// A real token made for this test process, whatever implements it: SoftHSM
// (test_token.h), opencryptoki's soft token (opencryptoki_token.h) or a software TPM
// through tpm2-pkcs11 (tpm_token.h). Tests that run on each of them take a TestBackend&.
//
// Each keeps its files in its own folder, dir(), with `pin` (the user PIN, 0600) and
// keysvc.toml ([hsm] module, token, pin = "file:pin"); config files written next to it
// may use the same relative `pin = "file:pin"`.
#pragma once

#include <string>
#include <vector>

#include "keysvc/config.h"
#include "keysvc/hsm/module.h"

namespace keysvc::test {

class TestBackend {
 public:
  virtual ~TestBackend() = default;

  // "softhsm", "opencryptoki", "tpm": for test names and messages.
  virtual std::string name() const = 0;
  virtual const std::string& dir() const = 0;
  // The PKCS#11 module keysvc loads for this token.
  virtual std::string module() const = 0;
  virtual std::string token_uri() const = 0;
  virtual const std::string& pin() const = 0;

  std::string config_path() const { return dir() + "/keysvc.toml"; }
  std::string pin_path() const { return dir() + "/pin"; }
  // The config in keysvc.toml.
  Config config() const;

  // Makes this process see the token as other processes left it (tpm2-pkcs11 shows
  // another process's changes only after a re-initialise: Module::restart). Call
  // before reading the token in the test process after a child process changed it.
  void refresh_view() const;
  // Destroys every object on the token, so a test starts from an empty ring.
  void clear() const;
  // Every object on the token as "CKA_LABEL id=HEX(CKA_ID)" plus the value of data
  // objects, sorted: equal before and after a command means it changed nothing.
  std::vector<std::string> objects() const;

 protected:
  // Writes DIR/pin and DIR/keysvc.toml (with `extra_hsm` lines in [hsm]).
  void write_pin_and_config(const std::string& extra_hsm = "") const;
};

// Writes `text` to `path` with `mode`; throws std::runtime_error.
void write_test_file(const std::string& path, const std::string& text, unsigned mode);
// A fresh private folder under $KEYSVC_TEST_TMPDIR (or /tmp) named PREFIX-XXXXXX.
std::string make_test_dir(const std::string& prefix);

}  // namespace keysvc::test
