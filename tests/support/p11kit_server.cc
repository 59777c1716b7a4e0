#include "p11kit_server.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace keysvc::test {

namespace {
bool accepts(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}
}  // namespace

P11KitServer::P11KitServer(std::string socket, std::string token_uri)
    : socket_(std::move(socket)), token_uri_(std::move(token_uri)) {}

P11KitServer::~P11KitServer() { kill(); }

void P11KitServer::start() {
  std::filesystem::remove(socket_);
  // setsid: its own process group, so kill() reaches the per-connection children too.
  process_ = std::make_unique<Process>(std::vector<std::string>{
      "setsid", "p11-kit", "server", "-f", "-n", socket_, "--provider", "/usr/lib/softhsm/libsofthsm2.so", token_uri_});
  ::setenv("P11_KIT_SERVER_ADDRESS", ("unix:path=" + socket_).c_str(), 1);
  // Probing connections are served by a child that exits when we hang up.
  for (int i = 0; i < 500; ++i) {
    if (std::filesystem::exists(socket_) && accepts(socket_)) return;
    if (process_->poll()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("p11-kit server did not start: " + process_->command_line() + "\n" + process_->err());
}

void P11KitServer::kill() {
  if (!process_) return;
  if (!process_->poll()) ::kill(-process_->pid(), SIGKILL);
  process_->wait(std::chrono::seconds(10));
  process_.reset();
}

}  // namespace keysvc::test
