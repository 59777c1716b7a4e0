// The accept loop: N worker threads accept on one listening socket and serve each
// connection synchronously (handshake, one HTTP request, response, close_notify, close).
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace tls_server {

// An owned file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const noexcept { return fd_; }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// A self-pipe that tells every thread to stop. Never drained: once triggered, its read
// end stays readable, so every poll() on it wakes up.
class StopSignal {
 public:
  StopSignal();
  // Makes SIGINT and SIGTERM trigger this (process-wide; one instance at a time).
  void catch_signals();
  void trigger() noexcept;
  int fd() const noexcept { return read_.get(); }
  bool triggered() const noexcept;

 private:
  UniqueFd read_, write_;
};

// Binds and listens on a numeric address, "HOST:PORT" or "[V6HOST]:PORT"
// (keysvc::parse_listen_address). Returns the non-blocking socket. Throws std::runtime_error.
UniqueFd listen_on(const std::string& address);
// "127.0.0.1:PORT" / "[::1]:PORT": the address the socket is bound to.
std::string bound_address(int fd);

struct ServerStats {
  std::uint64_t connections = 0;
  std::uint64_t handshakes_failed = 0;
  std::uint64_t full_handshakes = 0;
  std::uint64_t resumed = 0;
  std::uint64_t requests = 0;
};

class Server {
 public:
  Server(SSL_CTX* ctx, int listen_fd, StopSignal& stop, unsigned threads, std::uint64_t max_connections);

  // Starts the workers, calls `ready` once they run, waits until `stop` triggers (by
  // signal, by --max-connections, or by a worker's fatal error) and joins them.
  // Returns false if a worker failed.
  bool run(const std::function<void()>& ready);

  ServerStats stats() const noexcept;

 private:
  void worker() noexcept;
  void serve(int fd, std::uint64_t number);

  SSL_CTX* ctx_;
  int listen_fd_;
  StopSignal& stop_;
  unsigned threads_;
  std::uint64_t max_connections_;
  std::atomic<bool> failed_{false};
  std::atomic<std::uint64_t> accepted_{0}, handshakes_failed_{0}, full_{0}, resumed_{0}, requests_{0};
};

}  // namespace tls_server
