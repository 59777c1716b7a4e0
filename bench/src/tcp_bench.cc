#include "tcp_bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>

#include "tls_pair.h"
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "bench_env.h"
#include "bio_handshake.h"

namespace keysvc::bench {

namespace {

using Clock = std::chrono::steady_clock;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// CPU time of every thread of `pid` so far, from /proc/PID/task/*/schedstat (ns).
double process_cpu_ns(pid_t pid) {
  std::string base = "/proc/" + std::to_string(pid) + "/task";
  double total = 0;
  if (DIR* d = ::opendir(base.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream in(base + "/" + e->d_name + "/schedstat");
      double ns = 0;
      if (in >> ns) total += ns;
    }
    ::closedir(d);
  }
  return total;
}

// Starts keysvc-tls-server and waits for "listening on 127.0.0.1:PORT".
}  // namespace

std::string start_tcp_server(const TcpOptions& o, const TcpMode& m, int threads, TcpServer& out) {
  const std::string log = o.dir + "/server-" + m.name + "-" + std::to_string(threads) + ".log";
  std::vector<std::string> argv = {o.server_bin,   "--listen",  "127.0.0.1:0", "--cert", o.dir + "/server.crt",
                                   "--key",        o.dir + "/server.key",      "--tickets", m.tickets,
                                   "--threads",    std::to_string(threads),    "--log-level", "warn"};
  if (!m.config.empty()) {
    argv.push_back("--config");
    argv.push_back(m.config);
  }
  out.mode = m.name;
  out.threads = threads;
  out.child = Child(argv, log);
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    std::string text = read_file(log);
    auto at = text.find("listening on 127.0.0.1:");
    if (at != std::string::npos) {
      out.port = std::atoi(text.c_str() + at + std::strlen("listening on 127.0.0.1:"));
      if (out.port > 0) return "";
    }
    if (!out.child.running()) {
      for (auto& c : text)
        if (c == '\n') c = ' ';
      return "keysvc-tls-server exited at start: " + text;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  out.child.stop();
  return "keysvc-tls-server did not listen within 20 s";
}

namespace {

struct ConnResult {
  bool ok = false;
  bool reused = false;
  double latency_us = 0;
  std::string error;
  SessionPtr session;
};

std::string ssl_errors() { return test::openssl_errors(); }

// One connection: TCP connect, handshake, GET, the whole response, close.
ConnResult connect_once(int port, SSL_CTX* ctx, SSL_SESSION* resume, bool keep_session) {
  ConnResult r;
  auto t0 = Clock::now();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    r.error = "socket failed";
    return r;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    r.error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return r;
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (resume != nullptr) {  // TLS 1.3 sessions are single use: offer a fresh copy
    SSL_SESSION* copy = SSL_SESSION_dup(resume);
    SSL_set_session(ssl, copy);
    SSL_SESSION_free(copy);
  }
  static const char request[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  if (SSL_connect(ssl) != 1) {
    r.error = "handshake: " + ssl_errors();
  } else if (SSL_write(ssl, request, sizeof request - 1) != static_cast<int>(sizeof request - 1)) {
    r.error = "write: " + ssl_errors();
  } else {
    char buf[4096];
    std::size_t total = 0;
    for (;;) {
      int n = SSL_read(ssl, buf, sizeof buf);
      if (n > 0) {
        total += static_cast<std::size_t>(n);
        continue;
      }
      break;  // close_notify, EOF or error: the server closes after its response
    }
    if (total == 0) r.error = "no response: " + ssl_errors();
  }
  if (r.error.empty()) {
    r.latency_us = us_since(t0);
    r.ok = true;
    r.reused = SSL_session_reused(ssl) == 1;
    if (keep_session) r.session.reset(SSL_get1_session(ssl));
    SSL_shutdown(ssl);
  }
  ERR_clear_error();
  SSL_free(ssl);
  // Reset instead of FIN: no TIME_WAIT pile-up over tens of thousands of connections.
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
  return r;
}

}  // namespace

void run_tcp_chunk(const TcpOptions& o, TcpServer& server, int version, bool resume, CellAccum& acc) {
  SslCtxPtr ctx = make_client_ctx(version);
  const int clients = o.client_threads;
  std::vector<SessionPtr> sessions(static_cast<std::size_t>(clients));
  if (resume) {
    for (auto& s : sessions) {
      ConnResult w = connect_once(server.port, ctx.get(), nullptr, true);
      if (!w.ok || !w.session) {
        acc.failures++;
        if (acc.first_error.empty()) acc.first_error = "warm-up: " + w.error;
        return;
      }
      s = std::move(w.session);
    }
  }
  std::mutex mu;
  std::vector<std::thread> threads;
  const double cpu0 = process_cpu_ns(server.child.pid());
  auto t0 = Clock::now();
  for (int t = 0; t < clients; ++t) {
    int n = o.connections / clients + (t < o.connections % clients ? 1 : 0);
    threads.emplace_back([&, t, n] {
      std::vector<double> lat;
      std::uint64_t fail = 0, not_resumed = 0;
      std::string err;
      for (int i = 0; i < n; ++i) {
        ConnResult r = connect_once(server.port, ctx.get(), resume ? sessions[static_cast<std::size_t>(t)].get() : nullptr,
                                    false);
        if (!r.ok) {
          fail++;
          if (err.empty()) err = r.error;
          continue;
        }
        if (resume && !r.reused) not_resumed++;
        lat.push_back(r.latency_us);
      }
      std::lock_guard<std::mutex> lock(mu);
      acc.latency_us.insert(acc.latency_us.end(), lat.begin(), lat.end());
      acc.handshakes += lat.size();
      acc.failures += fail;
      acc.not_resumed += not_resumed;
      if (acc.first_error.empty() && !err.empty()) acc.first_error = err;
    });
  }
  for (auto& th : threads) th.join();
  acc.elapsed_ns += std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  acc.server_cpu_ns += process_cpu_ns(server.child.pid()) - cpu0;
}

Section::Memory tcp_server_memory(TcpServer& server) {
  std::string status = read_file("/proc/" + std::to_string(server.child.pid()) + "/status");
  auto field = [&](const char* name) {
    auto at = status.find(name);
    return at == std::string::npos ? 0L : std::atol(status.c_str() + at + std::strlen(name));
  };
  return {server.mode, server.threads, field("VmHWM:"), field("VmRSS:")};
}

std::string scenario_name(int version, bool resume, int threads) {
  return std::string(version == TLS1_3_VERSION ? "tls13" : "tls12") + (resume ? "-resume" : "-full") + "-t" +
         std::to_string(threads);
}

Section run_tcp(const TcpOptions& o, const std::vector<TcpMode>& modes) {
  Section section;
  section.name = "tcp";
  section.description = "loopback TCP to keysvc-tls-server, " + std::to_string(o.client_threads) +
                        " client threads in the bench process; handshake + one HTTP request per connection";
  if (::access(o.server_bin.c_str(), X_OK) != 0) {
    section.skipped = true;
    section.reason = "no keysvc-tls-server at " + o.server_bin;
    return section;
  }
  // Start one server per runnable mode and thread count; the first one writes the
  // certificate the others load.
  std::map<std::string, std::string> mode_skip;
  std::vector<std::unique_ptr<TcpServer>> servers;
  for (const auto& m : modes) {
    if (!m.skip.empty()) {
      mode_skip[m.name] = m.skip;
      continue;
    }
    for (int threads : o.server_threads) {
      auto s = std::make_unique<TcpServer>();
      std::string why = start_tcp_server(o, m, threads, *s);
      if (!why.empty()) {
        mode_skip[m.name] = why;
        break;
      }
      servers.push_back(std::move(s));
    }
  }
  auto find_server = [&](const std::string& mode, int threads) -> TcpServer* {
    if (mode_skip.count(mode)) return nullptr;
    for (auto& s : servers)
      if (s->mode == mode && s->threads == threads) return s.get();
    return nullptr;
  };

  struct Scn {
    int version;
    bool resume;
    int threads;
  };
  std::vector<Scn> scns;
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION})
    for (bool resume : {false, true})
      for (int threads : o.server_threads) scns.push_back({version, resume, threads});

  std::vector<std::vector<CellAccum>> acc(scns.size(), std::vector<CellAccum>(modes.size()));
  for (int round = 0; round < o.rounds; ++round) {
    for (std::size_t si = 0; si < scns.size(); ++si) {
      for (std::size_t k = 0; k < modes.size(); ++k) {
        std::size_t mi = (k + static_cast<std::size_t>(round) + si) % modes.size();  // rotate the order
        TcpServer* server = find_server(modes[mi].name, scns[si].threads);
        if (server == nullptr) continue;
        run_tcp_chunk(o, *server, scns[si].version, scns[si].resume, acc[si][mi]);
      }
    }
  }
  for (auto& s : servers) {
    section.memory.push_back(tcp_server_memory(*s));
    s->child.stop();
  }

  for (std::size_t si = 0; si < scns.size(); ++si) {
    ScenarioResult sc;
    sc.tls = scns[si].version == TLS1_3_VERSION ? "1.3" : "1.2";
    sc.kind = scns[si].resume ? "resume" : "full";
    sc.threads = scns[si].threads;
    sc.name = scenario_name(scns[si].version, scns[si].resume, sc.threads);
    for (std::size_t mi = 0; mi < modes.size(); ++mi) {
      if (mode_skip.count(modes[mi].name)) {
        CellResult c;
        c.mode = modes[mi].name;
        c.skipped = true;
        c.reason = mode_skip[modes[mi].name];
        sc.cells.push_back(c);
        continue;
      }
      sc.cells.push_back(summarise(modes[mi].name, acc[si][mi], false));
    }
    section.scenarios.push_back(std::move(sc));
  }
  add_ratios(section);
  return section;
}

}  // namespace keysvc::bench
