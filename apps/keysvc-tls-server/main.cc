// keysvc-tls-server: a small TLS 1.2/1.3 server answering every HTTP request with a
// short response, with session tickets from keysvc (HSM-backed) or, for comparison,
// from OpenSSL's built-in ticket keys. With [metrics] listen or --metrics-listen it serves
// Prometheus metrics on http://HOST:PORT/metrics (docs/METRICS.md).
//
// Exit codes: 0 after SIGTERM/SIGINT or --max-connections; 1 on a runtime failure;
// 2 on a usage error. Failures are one line on stderr.
#include <openssl/ssl.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "cert.h"
#include "keysvc/config.h"
#include "keysvc/hsm/process_hardening.h"
#include "keysvc/log.h"
#include "keysvc/openssl/ossl.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/listen_address.h"
#include "keysvc/prometheus/collector.h"
#include "keysvc/prometheus/exporter.h"
#include "keysvc/ticket_key_service.h"
#include "server.h"
#include "server_key.h"

namespace {

constexpr char kProgram[] = "keysvc-tls-server";
constexpr unsigned char kSessionIdContext[] = "keysvc-tls-server";

struct Options {
  std::string config;
  std::string listen = "127.0.0.1:8443";
  std::string cert;
  std::string key;
  std::string key_pin;
  std::string tickets = "keysvc";
  unsigned threads = 2;
  std::uint64_t max_connections = 0;
  std::string log_level;
  std::string metrics_listen;  // overrides [metrics] listen
};

std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

void print_failure(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, one_line(message).c_str());
}

keysvc::openssl::SslCtxPtr make_ssl_ctx(const Options& o, const tls_server::ServerKey& key) {
  keysvc::openssl::SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) throw keysvc::openssl::OpenSslError("SSL_CTX_new");
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) != 1)
    throw keysvc::openssl::OpenSslError("setting the protocol versions");
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.cert.c_str()) != 1)
    throw keysvc::openssl::OpenSslError("cannot load certificate " + o.cert);
  key.use_in(ctx.get());
  // Resumption only through tickets: no server-side session cache, so a resumed
  // session proves the ticket path works.
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  if (SSL_CTX_set_session_id_context(ctx.get(), kSessionIdContext, sizeof kSessionIdContext - 1) != 1)
    throw keysvc::openssl::OpenSslError("SSL_CTX_set_session_id_context");
  return ctx;
}

int run(const Options& o) {
  // Signals only ever reach the main thread: block them before any thread exists
  // (workers and library threads inherit the mask) and let them in only while the main
  // thread waits (Server::run polls the stop pipe after unblocking).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0) throw std::runtime_error("pthread_sigmask failed");
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  if (sigaction(SIGPIPE, &ignore, nullptr) != 0) throw std::runtime_error("cannot ignore SIGPIPE");

  std::optional<keysvc::Config> config;
  if (!o.config.empty()) {
    config = keysvc::Config::load_file(o.config);
    keysvc::set_log_level(config->log_level);
  }
  if (!o.log_level.empty()) keysvc::set_log_level(o.log_level);
  auto log = keysvc::logger();
  // Before any PIN or key is read: no core dump, no ptrace by the same user, unless the
  // config asks for them ([process] core_dumps; docs/SECURITY.md).
  if (config) keysvc::hsm::harden_process(config->process.core_dumps);

  tls_server::StopSignal stop;
  stop.catch_signals();

  // The token first: a configuration or login problem is then the only line printed.
  const bool use_keysvc = o.tickets == "keysvc";
  std::shared_ptr<keysvc::TicketKeyService> service;
  if (use_keysvc) {
    service = keysvc::TicketKeyService::open(*config);
    if (!o.log_level.empty()) keysvc::set_log_level(o.log_level);  // open() applied the config's level
  }

  // A key in the token shares the module (and the login) with the ticket sessions: see
  // keysvc/openssl/token_private_key.h. It outlives ctx (declared first).
  const tls_server::ServerKey key = tls_server::ServerKey::load(o.key, o.key_pin, config ? &*config : nullptr);
  if (!key.in_token() && tls_server::ensure_certificate(o.cert, o.key))
    log->info("generated a self-signed certificate {} and key {}", o.cert, o.key);
  keysvc::openssl::SslCtxPtr ctx = make_ssl_ctx(o, key);
  log->info("server key: {}", key.describe());

  if (use_keysvc) {
    keysvc::openssl::install(ctx.get(), service, {});
    log->info("session tickets: keysvc");
  } else {
    log->info("session tickets: OpenSSL built-in keys");
  }

  // Prometheus metrics of the service and of ctx's ticket callbacks (docs/METRICS.md).
  std::unique_ptr<keysvc::prometheus::Exporter> metrics;
  std::string metrics_listen = o.metrics_listen;
  if (metrics_listen.empty() && config) metrics_listen = config->metrics.listen;
  if (use_keysvc && !metrics_listen.empty()) {
    metrics = std::make_unique<keysvc::prometheus::Exporter>(
        metrics_listen, std::make_shared<keysvc::prometheus::Collector>(service, ctx.get()));
    std::fprintf(stderr, "metrics on http://%s/metrics\n", metrics->address().c_str());
  }
  service.reset();  // ctx (and the metrics collector) keep it

  tls_server::UniqueFd listener = tls_server::listen_on(o.listen);
  const std::string address = tls_server::bound_address(listener.get());

  tls_server::Server server(ctx.get(), listener.get(), stop, o.threads, o.max_connections);
  const bool ok = server.run([&] {
    if (pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr) != 0) throw std::runtime_error("pthread_sigmask failed");
    log->info("{} worker thread(s), TLS 1.2 and 1.3", o.threads);
    std::fprintf(stderr, "listening on %s\n", address.c_str());
    std::fflush(stderr);
  });

  const auto s = server.stats();
  log->info("stopped after {} connection(s): {} full handshake(s), {} resumed, {} failed, {} request(s)",
            s.connections, s.full_handshakes, s.resumed, s.handshakes_failed, s.requests);
  if (use_keysvc) {
    const auto c = keysvc::openssl::counters(ctx.get());
    log->info(
        "keysvc tickets: issued={} issue_failed={} resumed={} renewed={} unknown_key={} retired_key={} "
        "hsm_error={} rejected_bad_ticket={} rejected_unopened={} rejected_too_old={} rejected_bad_epoch={} "
        "empty_ticket={} pushed={}",
        c.issued, c.issue_failed, c.resumed, c.renewed, c.unknown_key, c.retired_key, c.hsm_error,
        c.rejected_bad_ticket, c.rejected_unopened, c.rejected_too_old, c.rejected_bad_epoch, c.empty_ticket,
        c.pushed);
  }
  metrics.reset();
  ctx.reset();  // releases the ticket key service (and its token sessions) too
  if (!ok) {
    print_failure("a worker failed; see the log above");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A small TLS 1.2/1.3 server with HSM-backed session tickets (keysvc).", kProgram};
  Options o;
  app.add_option("--config", o.config, "keysvc TOML file (required for --tickets keysvc)");
  app.add_option("--listen", o.listen, "numeric HOST:PORT to listen on; port 0 picks a free port")
      ->capture_default_str()
      ->check([](const std::string& v) {
        keysvc::ListenAddress parts;
        return keysvc::parse_listen_address(v, keysvc::IpFamilies::kIpv4AndIpv6, parts);
      });
  app.add_option("--cert", o.cert, "certificate file (PEM); generated with --key if both are absent")->required();
  app.add_option("--key", o.key,
                 "private key file (PEM), or a key in a PKCS#11 token: pkcs11:token=T;object=LABEL;type=private "
                 "(keysvcctl server-key create makes one)")
      ->required()
      ->check([](const std::string& v) { return tls_server::check_key_argument(v); });
  app.add_option("--key-pin", o.key_pin,
                 "PIN source for a --key in a token: file:PATH or env:NAME (default: the URI's pin-source, then "
                 "the config's hsm.pin)");
  app.add_option("--tickets", o.tickets, "session ticket keys: keysvc (HSM) or openssl (built-in)")
      ->capture_default_str()
      ->check(CLI::IsMember({"keysvc", "openssl"}));
  app.add_option("--threads", o.threads, "worker threads accepting connections")
      ->capture_default_str()
      ->check(CLI::Range(1u, 256u));
  app.add_option("--max-connections", o.max_connections, "exit after this many connections (0: never)")
      ->capture_default_str();
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error or off (default: from the config)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--metrics-listen", o.metrics_listen,
                 "numeric IPv4 HOST:PORT to serve Prometheus metrics on (/metrics); overrides [metrics] listen")
      ->check([](const std::string& v) { return keysvc::check_listen_address(v); });

  try {
    app.parse(argc, argv);
    if (o.tickets == "keysvc" && o.config.empty()) throw CLI::ValidationError("--tickets keysvc requires --config");
    if (o.tickets != "keysvc" && !o.metrics_listen.empty())
      throw CLI::ValidationError("--metrics-listen requires --tickets keysvc");
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help
    print_failure(std::string(e.what()) + " (see --help)");
    return 2;
  }

  try {
    return run(o);
  } catch (const std::exception& e) {
    print_failure(e.what());
    return 1;
  }
}
