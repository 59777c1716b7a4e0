#include "server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "keysvc/listen_address.h"
#include "keysvc/log.h"
#include "keysvc/openssl/ossl.h"

namespace tls_server {
namespace {

using keysvc::openssl::OpenSslError;
using keysvc::openssl::SslPtr;
using keysvc::openssl::take_openssl_error;

constexpr int kIoTimeoutSeconds = 10;      // per read/write on a connection
constexpr int kLingerMillis = 250;         // wait for the peer's close after ours
constexpr std::size_t kMaxRequest = 16384;  // request head limit
constexpr std::string_view kBody = "hello from keysvc-tls-server\n";

std::string errno_text(int err) { return std::strerror(err); }

// The write end of the active StopSignal, for the signal handler.
std::atomic<int> g_signal_fd{-1};

extern "C" void on_stop_signal(int) {
  const int saved = errno;
  const int fd = g_signal_fd.load();
  if (fd >= 0) {
    const char byte = 1;
    [[maybe_unused]] ssize_t n = ::write(fd, &byte, 1);
  }
  errno = saved;
}


struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const noexcept { ::freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

// Waits for `fd` to become readable, up to `millis`. Returns false on timeout.
bool wait_readable(int fd, int millis) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int n = ::poll(&p, 1, millis);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

std::string ssl_failure(SSL* ssl, int ret) {
  const int err = SSL_get_error(ssl, ret);
  switch (err) {
    case SSL_ERROR_ZERO_RETURN:
      return "peer closed the connection";
    case SSL_ERROR_SYSCALL: {
      const int e = errno;
      ERR_clear_error();
      return e == 0 ? "unexpected EOF" : "I/O error: " + errno_text(e);
    }
    case SSL_ERROR_SSL:
      return take_openssl_error();
    default:
      ERR_clear_error();
      return "SSL error " + std::to_string(err);
  }
}

void prepare_connection(int fd) {
  const int one = 1;
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    throw std::runtime_error("fcntl(O_NONBLOCK): " + errno_text(errno));
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    keysvc::logger()->debug("setsockopt(TCP_NODELAY) failed: {}", errno_text(errno));
}

// Why an SSL call on a connection gave up.
enum class IoOutcome { kDone, kSslError, kTimeout, kStopping };

// Runs `op` (an SSL call) on the non-blocking connection, waiting while it wants to
// read or write: at most kIoTimeoutSeconds per wait, and never past a stop request.
template <typename Op>
IoOutcome ssl_io(SSL* ssl, int fd, int stop_fd, Op op, int& ret) {
  for (;;) {
    ret = op();
    if (ret > 0) return IoOutcome::kDone;
    const int err = SSL_get_error(ssl, ret);
    short events = 0;
    if (err == SSL_ERROR_WANT_READ) events = POLLIN;
    if (err == SSL_ERROR_WANT_WRITE) events = POLLOUT;
    if (events == 0) return IoOutcome::kSslError;
    std::array<pollfd, 2> fds{pollfd{fd, events, 0}, pollfd{stop_fd, POLLIN, 0}};
    int n = 0;
    do {
      n = ::poll(fds.data(), fds.size(), kIoTimeoutSeconds * 1000);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return IoOutcome::kSslError;
    if (fds[1].revents != 0) return IoOutcome::kStopping;
    if (n == 0) return IoOutcome::kTimeout;
  }
}

std::string io_failure(IoOutcome outcome, SSL* ssl, int ret) {
  switch (outcome) {
    case IoOutcome::kTimeout:
      return "timed out";
    case IoOutcome::kStopping:
      return "server stopping";
    default:
      return ssl_failure(ssl, ret);
  }
}

// After our close_notify: half-close, then give the peer a moment to close its side so
// unread bytes from it do not turn our close() into a reset that could discard the
// response before the peer reads it.
void linger_close(int fd) {
  if (::shutdown(fd, SHUT_WR) != 0) return;
  std::array<char, 4096> sink{};
  for (int rounds = 0; rounds < 16; ++rounds) {
    if (!wait_readable(fd, kLingerMillis)) return;
    ssize_t n = ::read(fd, sink.data(), sink.size());
    if (n <= 0) return;
  }
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

StopSignal::StopSignal() {
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe2: " + errno_text(errno));
  read_ = UniqueFd(fds[0]);
  write_ = UniqueFd(fds[1]);
}

void StopSignal::catch_signals() {
  g_signal_fd.store(write_.get());
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (::sigaction(SIGTERM, &sa, nullptr) != 0 || ::sigaction(SIGINT, &sa, nullptr) != 0)
    throw std::runtime_error("sigaction: " + errno_text(errno));
}

void StopSignal::trigger() noexcept {
  const char byte = 1;
  [[maybe_unused]] ssize_t n = ::write(write_.get(), &byte, 1);  // full pipe: already triggered
}

bool StopSignal::triggered() const noexcept {
  pollfd p{read_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}


UniqueFd listen_on(const std::string& address) {
  keysvc::ListenAddress parts;
  if (auto problem = keysvc::parse_listen_address(address, keysvc::IpFamilies::kIpv4AndIpv6, parts); !problem.empty())
    throw std::runtime_error("--listen: " + problem);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* raw = nullptr;
  if (int rc = ::getaddrinfo(parts.host.c_str(), parts.port.c_str(), &hints, &raw); rc != 0)
    throw std::runtime_error("cannot resolve " + address + ": " + ::gai_strerror(rc));
  AddrInfoPtr ai(raw);

  UniqueFd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error("socket: " + errno_text(errno));
  const int one = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    throw std::runtime_error("setsockopt(SO_REUSEADDR): " + errno_text(errno));
  if (ai->ai_family == AF_INET6 && ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
    throw std::runtime_error("setsockopt(IPV6_V6ONLY): " + errno_text(errno));
  if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0)
    throw std::runtime_error("cannot bind " + address + ": " + errno_text(errno));
  if (::listen(fd.get(), SOMAXCONN) != 0) throw std::runtime_error("listen: " + errno_text(errno));
  return fd;
}

std::string bound_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    throw std::runtime_error("getsockname: " + errno_text(errno));
  std::array<char, INET6_ADDRSTRLEN> host{};
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    if (::inet_ntop(AF_INET, &sin->sin_addr, host.data(), host.size()) == nullptr)
      throw std::runtime_error("inet_ntop: " + errno_text(errno));
    return std::string(host.data()) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  if (::inet_ntop(AF_INET6, &sin6->sin6_addr, host.data(), host.size()) == nullptr)
    throw std::runtime_error("inet_ntop: " + errno_text(errno));
  return "[" + std::string(host.data()) + "]:" + std::to_string(ntohs(sin6->sin6_port));
}

Server::Server(SSL_CTX* ctx, int listen_fd, StopSignal& stop, unsigned threads, std::uint64_t max_connections)
    : ctx_(ctx), listen_fd_(listen_fd), stop_(stop), threads_(threads), max_connections_(max_connections) {}

bool Server::run(const std::function<void()>& ready) {
  std::vector<std::thread> workers;
  workers.reserve(threads_);
  try {
    for (unsigned i = 0; i < threads_; ++i) workers.emplace_back([this] { worker(); });
    ready();
  } catch (...) {
    stop_.trigger();
    for (auto& t : workers) t.join();
    throw;
  }
  while (!stop_.triggered()) wait_readable(stop_.fd(), -1);
  keysvc::logger()->info("stopping: waiting for {} worker(s)", workers.size());
  for (auto& t : workers) t.join();
  return !failed_.load();
}

ServerStats Server::stats() const noexcept {
  ServerStats s;
  s.connections = accepted_.load();
  s.handshakes_failed = handshakes_failed_.load();
  s.full_handshakes = full_.load();
  s.resumed = resumed_.load();
  s.requests = requests_.load();
  return s;
}

void Server::worker() noexcept {
  auto log = keysvc::logger();
  std::array<pollfd, 2> fds{pollfd{listen_fd_, POLLIN, 0}, pollfd{stop_.fd(), POLLIN, 0}};
  for (;;) {
    int n = ::poll(fds.data(), fds.size(), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log->error("poll: {}", errno_text(errno));
      break;
    }
    if (fds[1].revents != 0) return;  // stop requested
    if (fds[0].revents & (POLLERR | POLLNVAL)) {
      log->error("listening socket failed");
      break;
    }
    if (!(fds[0].revents & POLLIN)) continue;

    UniqueFd conn(::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
    if (conn.get() < 0) {
      const int err = errno;
      switch (err) {
        case EAGAIN:  // another worker took it
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
          continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
          log->warn("accept: {}; backing off", errno_text(err));
          wait_readable(stop_.fd(), 100);
          continue;
        default:
          log->error("accept: {}", errno_text(err));
          break;
      }
      break;
    }

    const std::uint64_t number = accepted_.fetch_add(1) + 1;
    if (max_connections_ != 0 && number > max_connections_) return;  // over the limit: stopping anyway
    try {
      serve(conn.get(), number);
    } catch (const std::exception& e) {
      log->warn("connection {}: {}", number, e.what());
    }
    if (max_connections_ != 0 && number == max_connections_) {
      log->info("served {} connection(s) (--max-connections): stopping", number);
      stop_.trigger();
    }
  }
  failed_.store(true);
  stop_.trigger();
}

void Server::serve(int fd, std::uint64_t number) {
  auto log = keysvc::logger();
  ERR_clear_error();
  prepare_connection(fd);

  SslPtr ssl(SSL_new(ctx_));
  if (!ssl) throw OpenSslError("SSL_new");
  if (SSL_set_fd(ssl.get(), fd) != 1) throw OpenSslError("SSL_set_fd");
  SSL* s = ssl.get();
  const int stop_fd = stop_.fd();
  int ret = 0;

  if (auto outcome = ssl_io(s, fd, stop_fd, [s] { return SSL_accept(s); }, ret); outcome != IoOutcome::kDone) {
    handshakes_failed_.fetch_add(1);
    log->debug("connection {}: handshake failed: {}", number, io_failure(outcome, s, ret));
    ERR_clear_error();
    return;
  }
  const bool reused = SSL_session_reused(s) == 1;
  (reused ? resumed_ : full_).fetch_add(1);
  log->debug("connection {}: {} {}, cipher {}", number, SSL_get_version(s),
             reused ? "session reused" : "full handshake (new session)", SSL_get_cipher_name(s));

  // Read the request head.
  std::string request;
  std::array<char, 4096> buf{};
  bool usable = true;        // false after a fatal error or timeout: no close_notify then
  bool peer_closed = false;  // the peer sent close_notify
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequest) {
    auto outcome =
        ssl_io(s, fd, stop_fd, [s, &buf] { return SSL_read(s, buf.data(), static_cast<int>(buf.size())); }, ret);
    if (outcome != IoOutcome::kDone) {
      peer_closed = outcome == IoOutcome::kSslError && SSL_get_error(s, ret) == SSL_ERROR_ZERO_RETURN;
      usable = peer_closed;
      log->debug("connection {}: {} after {} request byte(s)", number, io_failure(outcome, s, ret), request.size());
      break;
    }
    request.append(buf.data(), static_cast<std::size_t>(ret));
  }

  const bool complete = request.find("\r\n\r\n") != std::string::npos;
  if (usable && (complete || request.size() >= kMaxRequest)) {
    std::string response;
    if (complete) {
      requests_.fetch_add(1);
      response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(kBody.size()) +
                 "\r\nConnection: close\r\n\r\n" + std::string(kBody);
    } else {
      response = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    // Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write succeeds only once it all went.
    auto outcome = ssl_io(
        s, fd, stop_fd, [s, &response] { return SSL_write(s, response.data(), static_cast<int>(response.size())); },
        ret);
    if (outcome != IoOutcome::kDone) {
      usable = false;
      log->debug("connection {}: write failed: {}", number, io_failure(outcome, s, ret));
    }
  }

  if (usable) {
    // Send close_notify (SSL_shutdown returns 0 once it is out; we do not wait for the
    // peer's). Once the peer has closed, it may be gone before ours reaches it.
    auto outcome = ssl_io(s, fd, stop_fd, [s] { return SSL_shutdown(s) >= 0 ? 1 : -1; }, ret);
    if (outcome != IoOutcome::kDone && !peer_closed)
      log->debug("connection {}: close_notify failed: {}", number, io_failure(outcome, s, ret));
    linger_close(fd);
  }
  ERR_clear_error();
}

}  // namespace tls_server
