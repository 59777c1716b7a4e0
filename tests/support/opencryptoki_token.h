// A real opencryptoki soft token made for this test process, behind its own pkcsslotd.
//
// pkcsslotd is a system-wide daemon: one per machine, its configuration in
// /etc/opencryptoki, token data in /var/lib/opencryptoki, its socket and pid file in
// /run, shared memory in /dev/shm and SysV IPC. So that tests never touch the machine's
// opencryptoki state and can run in parallel, the first get() moves this process into
// new mount and IPC namespaces (unshare(2); the process must be single-threaded then)
// where those four places are private (bind mounts of this test's folder, tmpfs),
// starts pkcsslotd there with one soft token slot (slot 3, libpkcs11_sw.so), and
// initialises its token "keysvc-test" through PKCS#11 (SO PIN 87654321, the soft token's
// default; a random 8-character user PIN: the soft token allows 4 to 8). Child processes
// (servers, keysvcctl) inherit the namespaces. pkcsslotd is stopped at exit.
#pragma once

#include <string>

#include "test_backend.h"

namespace keysvc::test {

inline constexpr char kOpencryptokiModule[] = "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0";

class OpencryptokiToken : public TestBackend {
 public:
  static OpencryptokiToken& get();

  std::string name() const override { return "opencryptoki"; }
  const std::string& dir() const override { return dir_; }
  std::string module() const override { return kOpencryptokiModule; }
  std::string token_uri() const override { return "pkcs11:token=keysvc-test"; }
  const std::string& pin() const override { return pin_; }

 private:
  OpencryptokiToken();
  ~OpencryptokiToken() override;
  std::string dir_;
  std::string pin_;
  int slotd_pid_ = -1;
};

}  // namespace keysvc::test
