// A network HSM stand-in for tests: `p11-kit server` exporting the test token (SoftHSM,
// SOFTHSM2_CONF from this process) over a unix socket. keysvc loads
// p11-kit-client.so with P11_KIT_SERVER_ADDRESS=unix:path=SOCKET (set by start()).
//
// The server forks a p11-kit-remote child per client connection; kill() sends SIGKILL
// to the whole process group (the server runs under setsid), as when the HSM host dies.
#pragma once

#include <memory>
#include <string>

#include "process.h"

namespace keysvc::test {

inline constexpr char kP11KitClientModule[] = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

class P11KitServer {
 public:
  // `socket`: the unix socket path; `token_uri`: the token to export.
  P11KitServer(std::string socket, std::string token_uri);
  ~P11KitServer();  // kills it

  // Starts the server (waits until the socket accepts) and exports
  // P11_KIT_SERVER_ADDRESS. Throws std::runtime_error.
  void start();
  // SIGKILL to the server and every connection it serves.
  void kill();

 private:
  std::string socket_;
  std::string token_uri_;
  std::unique_ptr<Process> process_;
};

}  // namespace keysvc::test
