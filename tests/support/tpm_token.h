// A real TPM 2.0 token made for this test process: a software TPM (swtpm) on free
// 127.0.0.1 ports, a private D-Bus session bus (dbus-daemon), tpm2-abrmd as resource
// manager on it (without one, two processes using the TPM at once fail with
// "out of memory for object contexts"), and a tpm2-pkcs11 store in this test's folder
// with one token "keysvc-test" (random PINs, created by tools/keysvc-tpm2-keys with the
// PINs on its stdin).
//
// get() exports what every process using the token needs, so child processes (servers,
// keysvcctl) inherit it: DBUS_SESSION_BUS_ADDRESS, TPM2_PKCS11_TCTI and TPM2TOOLS_TCTI
// (tabrmd:bus_type=session), TPM2_PKCS11_STORE, and KEYSVC_TPM2_KEY_TOOL (the helper in
// the source tree). The three daemons are stopped and the folder removed at exit.
#pragma once

#include <memory>
#include <string>

#include "process.h"
#include "test_backend.h"

namespace keysvc::test {

inline constexpr char kTpm2Module[] = "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1";

class TpmToken : public TestBackend {
 public:
  static TpmToken& get();

  std::string name() const override { return "tpm"; }
  const std::string& dir() const override { return dir_; }
  std::string module() const override { return kTpm2Module; }
  std::string token_uri() const override { return "pkcs11:token=keysvc-test"; }
  const std::string& pin() const override { return pin_; }

 private:
  TpmToken();
  ~TpmToken() override;
  std::string dir_;
  std::string pin_;
  std::unique_ptr<Process> swtpm_, dbus_, abrmd_;
};

}  // namespace keysvc::test
