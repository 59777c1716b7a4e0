// keysvc-tls-server's Prometheus endpoint, end to end: real TLS clients (openssl
// s_client) drive full and resumed handshakes, curl scrapes /metrics, and every count
// must match what the clients did. Also the endpoint's error contract (bad or busy
// address: one line, non-zero exit).
//
// Every test name contains "interop" so `ctest -R interop` selects them.
#include <gtest/gtest.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <map>
#include <fstream>
#include <memory>
#include <thread>
#include <sstream>
#include <string>
#include <vector>

#include "metrics_scrape.h"
#include "process.h"
#include "test_token.h"
#include "tls_pair.h"
#include "tls_server_process.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::delta;
using keysvc::test::describe;
using keysvc::test::parse_exposition;
using keysvc::test::RunResult;
using keysvc::test::sample;
using keysvc::test::scrape_metrics;
using keysvc::test::TestToken;
using keysvc::test::tls_test_dir;
using keysvc::test::TlsServerProcess;
using keysvc::test::TlsVersion;

using Samples = std::map<std::string, double>;

// The test token's keysvc.toml with `tier` (strict unless told) and `tail` appended. Its
// issue pool is off, so in the strict tier every ticket is derived in the token when
// issued and HSM call counts follow the handshakes exactly.
std::string write_config(const std::string& name, const std::string& tail, const std::string& tier = "strict") {
  std::ifstream in(TestToken::get().config_path());
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().find("issue_pool = 0\n") == std::string::npos)
    throw std::runtime_error("the exact counts below need the test token's issue_pool = 0");
  const std::string path = TestToken::get().dir() + "/" + name;  // beside the PIN file it names
  std::ofstream(path) << text.str() << "\n[rotation]\ntier = \"" << tier << "\"\n" << tail;
  return path;
}

TlsServerProcess start_server(const std::string& config, std::vector<std::string> extra = {}) {
  return TlsServerProcess(KEYSVC_TLS_SERVER_BIN, {.config = config, .extra = std::move(extra)});
}

void full_then_resume(int port, TlsVersion v, int full, int resumed, const std::string& tag) {
  for (int i = 0; i < full; ++i) {
    const std::string sess = tls_test_dir() + "/metrics-" + tag + std::to_string(i) + ".pem";
    RunResult r = keysvc::test::s_client(port, v, "-sess_out", sess);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    ASSERT_NE(r.out.find(std::string("New, ") + keysvc::test::tls_version_name(v)), std::string::npos) << describe(r);
  }
  for (int i = 0; i < resumed; ++i) {
    const std::string sess = tls_test_dir() + "/metrics-" + tag + std::to_string(i % full) + ".pem";
    RunResult r = keysvc::test::s_client(port, v, "-sess_in", sess);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    ASSERT_NE(r.out.find(std::string("Reused, ") + keysvc::test::tls_version_name(v)), std::string::npos)
        << describe(r);
  }
}

struct Expected {
  int issued;       // tickets issued (each derived in the HSM: the issue pool is off)
  int resumed;      // tickets opened and accepted
};

// Checks the scrape deltas of the ticket counters against what the clients did (any tier).
void expect_ticket_counts(const Samples& before, const Samples& after, const Expected& want, const std::string& key) {
  // The OpenSSL callbacks and the service.
  EXPECT_EQ(delta(before, after, R"(keysvc_tls_tickets_total{event="issued"})"), want.issued);
  EXPECT_EQ(delta(before, after, R"(keysvc_tls_tickets_total{event="resumed"})"), want.resumed);
  EXPECT_EQ(delta(before, after, R"(keysvc_tls_tickets_total{event="issue_failed"})"), 0);
  EXPECT_EQ(delta(before, after, "keysvc_service_issued_total"), want.issued);
  EXPECT_EQ(delta(before, after, "keysvc_service_opened_total"), want.resumed);
  EXPECT_EQ(delta(before, after, "keysvc_service_issued_from_pool_total"), 0);
  // Per key name.
  EXPECT_EQ(delta(before, after, R"(keysvc_tickets_total{key=")" + key + R"(",outcome="issued"})"), want.issued);
  EXPECT_EQ(delta(before, after, R"(keysvc_tickets_total{key=")" + key + R"(",outcome="resumed"})"), want.resumed);
}

// The strict tier: the ticket counters, and two HMACs in the token per ticket.
void expect_counts(const Samples& before, const Samples& after, const Expected& want, const std::string& key) {
  SCOPED_TRACE("encrypt key " + key);
  expect_ticket_counts(before, after, want, key);
  // Two HMACs in the token per derivation, each a C_SignInit and a C_Sign, none failed.
  const int signs = 2 * (want.issued + want.resumed);
  EXPECT_EQ(delta(before, after, "keysvc_service_hsm_sign_calls_total"), signs);
  EXPECT_EQ(delta(before, after, R"(keysvc_hsm_call_seconds_count{function="C_Sign"})"), signs);
  EXPECT_EQ(delta(before, after, R"(keysvc_hsm_call_seconds_count{function="C_SignInit"})"), signs);
  EXPECT_EQ(delta(before, after, R"(keysvc_hsm_call_seconds_bucket{function="C_Sign",le="+Inf"})"), signs);
  EXPECT_GT(delta(before, after, R"(keysvc_hsm_call_seconds_sum{function="C_Sign"})"), 0);
  EXPECT_EQ(delta(before, after, "keysvc_service_hsm_errors_total"), 0);
}

// The encrypt generation's name, from its info gauge ("" if there is none).
std::string encrypt_key(const Samples& s) {
  for (const auto& [series, value] : s)
    if (series.starts_with("keysvc_encrypt_key_info{key=\"") && value == 1) return series.substr(29, 32);
  return "";
}

TEST(interop_metrics, ScrapeCountsEqualTheHandshakesDriven) {
  const std::string config = write_config("metrics.toml", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
  TlsServerProcess server = start_server(config);
  const auto port = server.metrics_port();
  ASSERT_TRUE(port.has_value()) << server.process().err();

  const Samples before = parse_exposition(scrape_metrics(*port));
  const std::string key = encrypt_key(before);
  ASSERT_EQ(key.size(), 32u) << scrape_metrics(*port);

  // TLS 1.3: two tickets per full handshake; a resumption opens one and gets one fresh.
  constexpr int kFull = 3, kResumed = 4;
  full_then_resume(server.port(), TlsVersion::kTls13, kFull, kResumed, "13-");
  const Samples after13 = parse_exposition(scrape_metrics(*port));
  expect_counts(before, after13, {.issued = 2 * kFull + kResumed, .resumed = kResumed}, key);

  // TLS 1.2: one ticket per full handshake; a resumption under the current generation
  // opens it and issues none.
  full_then_resume(server.port(), TlsVersion::kTls12, 2, 3, "12-");
  const Samples after12 = parse_exposition(scrape_metrics(*port));
  expect_counts(after13, after12, {.issued = 2, .resumed = 3}, key);

  // Histogram buckets are cumulative and end at the count.
  const std::string text = scrape_metrics(*port);
  const Samples now = parse_exposition(text);
  const std::string prefix = R"(keysvc_hsm_call_seconds_bucket{function="C_Sign",le=")";
  std::map<double, double> buckets;  // upper bound -> cumulative count
  for (const auto& [series, value] : now)
    if (series.starts_with(prefix)) buckets[std::stod(series.substr(prefix.size()))] = value;  // "+Inf" -> inf
  ASSERT_EQ(buckets.size(), 21u) << text;
  double previous = 0;
  for (const auto& [bound, cumulative] : buckets) {
    EXPECT_GE(cumulative, previous) << "le=" << bound;
    previous = cumulative;
  }
  EXPECT_EQ(sample(now, R"(keysvc_hsm_call_seconds_bucket{function="C_Sign",le="+Inf"})"),
            sample(now, R"(keysvc_hsm_call_seconds_count{function="C_Sign"})"));
  EXPECT_NE(text.find("# TYPE keysvc_hsm_call_seconds histogram"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE keysvc_tickets_total counter"), std::string::npos) << text;
  EXPECT_EQ(text.find(TestToken::get().pin()), std::string::npos) << "the PIN appears in the metrics";

  const std::string log = server.stop();
  EXPECT_NE(log.find("keysvc tickets: issued=" + std::to_string(2 * kFull + kResumed + 2) + " "), std::string::npos)
      << log;
}

// `in`'s session with its ticket's epoch field (IV bytes 0..3, after the 16-byte key name)
// moved `ahead` epochs forward, written to `out`.
void move_ticket_epoch(const std::string& in, const std::string& out, std::uint32_t ahead) {
  std::unique_ptr<BIO, decltype(&BIO_free)> r(BIO_new_file(in.c_str(), "r"), BIO_free);
  ASSERT_TRUE(r) << in;
  keysvc::test::SessionPtr session(PEM_read_bio_SSL_SESSION(r.get(), nullptr, nullptr, nullptr));
  ASSERT_TRUE(session) << in;
  std::vector<std::uint8_t> ticket = keysvc::test::ticket_of(session.get());
  ASSERT_GE(ticket.size(), 32u);
  std::uint32_t field = 0;
  for (int k = 16; k < 20; ++k) field = (field << 8) | ticket[k];
  field += ahead;
  for (int k = 19; k >= 16; --k, field >>= 8) ticket[k] = static_cast<std::uint8_t>(field);
  keysvc::test::SessionPtr moved = keysvc::test::with_ticket(session.get(), ticket);
  std::unique_ptr<BIO, decltype(&BIO_free)> w(BIO_new_file(out.c_str(), "w"), BIO_free);
  ASSERT_TRUE(w && PEM_write_bio_SSL_SESSION(w.get(), moved.get()) == 1) << out;
}

// The epoch tier (the default): the epoch keys held and derived are exported (counts, never
// bytes), tickets cost no HSM call, and a ticket naming a future epoch is refused as
// bad_epoch without one.
TEST(interop_metrics, EpochTierExportsEpochKeysAndTicketsCostNoHsmCall) {
  TestToken::get().clear();  // a fresh epoch-tier generation (a strict one would keep encrypting)
  const std::string config =
      write_config("metrics-epoch.toml", "[metrics]\nlisten = \"127.0.0.1:0\"\n", "epoch");
  TlsServerProcess server = start_server(config);
  const auto port = server.metrics_port();
  ASSERT_TRUE(port.has_value()) << server.process().err();

  // After start-up the maintenance thread derives the current and the next epoch's keys.
  Samples before;
  for (int i = 0; i < 200 && sample(before, "keysvc_epoch_keys") < 2; ++i) {
    if (i > 0) std::this_thread::sleep_for(100ms);
    before = parse_exposition(scrape_metrics(*port));
  }
  ASSERT_GE(sample(before, "keysvc_epoch_keys"), 2) << scrape_metrics(*port);
  const std::string key = encrypt_key(before);
  ASSERT_EQ(key.size(), 32u) << scrape_metrics(*port);
  // Every key held was derived in the token, one HMAC each, and nothing else signed.
  EXPECT_GE(sample(before, "keysvc_service_epoch_keys_derived_total"), sample(before, "keysvc_epoch_keys"));
  EXPECT_EQ(sample(before, "keysvc_service_hsm_sign_calls_total"),
            sample(before, "keysvc_service_epoch_keys_derived_total"));
  EXPECT_EQ(sample(before, R"(keysvc_hsm_call_seconds_count{function="C_Sign"})"),
            sample(before, "keysvc_service_epoch_keys_derived_total"));

  full_then_resume(server.port(), TlsVersion::kTls13, 3, 4, "e13-");
  full_then_resume(server.port(), TlsVersion::kTls12, 2, 3, "e12-");
  const Samples after = parse_exposition(scrape_metrics(*port));
  expect_ticket_counts(before, after, {.issued = 2 * 3 + 4 + 2, .resumed = 4 + 3}, key);
  // No HSM call per ticket: the only signs are epoch keys, and only if an epoch began
  // during the run (its successor's key is then prepared).
  const double derived = delta(before, after, "keysvc_service_epoch_keys_derived_total");
  EXPECT_LE(derived, 1);
  EXPECT_EQ(delta(before, after, R"(keysvc_hsm_call_seconds_count{function="C_Sign"})"), derived);
  EXPECT_EQ(delta(before, after, "keysvc_service_hsm_sign_calls_total"), derived);
  EXPECT_EQ(delta(before, after, "keysvc_service_hsm_errors_total"), 0);
  // At most lifetime / epoch + 2 per generation (2h / 5m + 2), one generation here.
  EXPECT_LE(sample(after, "keysvc_epoch_keys"), 2 * 3600 / 300 + 2);
  EXPECT_GE(sample(after, "keysvc_epoch_keys"), 2);

  // A TLS 1.2 ticket moved 1000 epochs into the future: a full handshake, bad_epoch, no HSM call.
  const std::string moved = tls_test_dir() + "/metrics-e12-moved.pem";
  move_ticket_epoch(tls_test_dir() + "/metrics-e12-0.pem", moved, 1000);
  RunResult r = keysvc::test::s_client(server.port(), TlsVersion::kTls12, "-sess_in", moved);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  EXPECT_NE(r.out.find("New, TLSv1.2"), std::string::npos) << describe(r);
  const Samples refused = parse_exposition(scrape_metrics(*port));
  EXPECT_EQ(delta(after, refused, R"(keysvc_tickets_total{key=")" + key + R"(",outcome="bad_epoch"})"), 1);
  EXPECT_EQ(delta(after, refused, R"(keysvc_tls_tickets_total{event="rejected_bad_epoch"})"), 1);
  EXPECT_EQ(delta(after, refused, R"(keysvc_hsm_call_seconds_count{function="C_Sign"})"),
            delta(after, refused, "keysvc_service_epoch_keys_derived_total"));
  EXPECT_EQ(sample(refused, R"(keysvc_tls_tickets_total{event="over_cap"})"), 0);

  const std::string log = server.stop();
  EXPECT_NE(log.find("rejected_bad_epoch=1 "), std::string::npos) << log;
}

TEST(interop_metrics, FlagOverridesTheConfigAndOffMeansNoEndpoint) {
  TlsServerProcess off = start_server(write_config("metrics-off.toml", ""));
  EXPECT_FALSE(off.metrics_port().has_value()) << off.process().err();
  off.stop();

  TlsServerProcess on = start_server(write_config("metrics-off2.toml", ""), {"--metrics-listen", "127.0.0.1:0"});
  const auto port = on.metrics_port();
  ASSERT_TRUE(port.has_value()) << on.process().err();
  const Samples s = parse_exposition(scrape_metrics(*port));
  EXPECT_EQ(sample(s, "keysvc_service_issued_total"), 0);
  EXPECT_GE(sample(s, "keysvc_generations"), 1);
  EXPECT_GE(sample(s, "keysvc_hsm_sessions_open"), 1);
  EXPECT_GE(sample(s, R"(keysvc_hsm_call_seconds_count{function="C_Login"})"), 1);
  on.stop();
}

// ---- errors: one line, non-zero exit, nothing served ----

RunResult run_server(std::vector<std::string> args) {
  // Log level warn: the failure must be the only line.
  std::vector<std::string> argv = {KEYSVC_TLS_SERVER_BIN, "--listen", "127.0.0.1:0", "--cert",
                                   keysvc::test::tls_cert_path(), "--key", keysvc::test::tls_key_path(),
                                   "--log-level", "warn"};
  argv.insert(argv.end(), args.begin(), args.end());
  return keysvc::test::run(argv, "", 20s);
}

void expect_one_line_failure(const RunResult& r, int code, const std::string& what) {
  EXPECT_EQ(r.exit_code, std::optional<int>(code)) << describe(r);
  EXPECT_EQ(keysvc::test::count_lines(r.err), 1u) << describe(r);
  EXPECT_NE(r.err.find(what), std::string::npos) << describe(r);
  EXPECT_EQ(r.err.find(TestToken::get().pin()), std::string::npos) << describe(r);
}

TEST(interop_metrics, MalformedFlagIsAUsageError) {
  const std::string config = TestToken::get().config_path();
  expect_one_line_failure(run_server({"--config", config, "--metrics-listen", "localhost:9464"}), 2,
                          "'localhost' is not a numeric IPv4 address");
  expect_one_line_failure(run_server({"--config", config, "--metrics-listen", "127.0.0.1"}), 2,
                          "expected a numeric IPv4 HOST:PORT");
  expect_one_line_failure(run_server({"--tickets", "openssl", "--metrics-listen", "127.0.0.1:0"}), 2,
                          "--metrics-listen requires --tickets keysvc");
}

TEST(interop_metrics, MalformedConfigIsOneLine) {
  const std::string config = write_config("metrics-bad.toml", "[metrics]\nlisten = \"127.0.0.1:99999\"\n");
  expect_one_line_failure(run_server({"--config", config}), 1, "metrics.listen: bad port '99999'");
}

TEST(interop_metrics, BusyAddressIsOneLine) {
  // Hold a listening socket on a free port, then ask the server to serve metrics there.
  const keysvc::test::BusyPort port;
  const std::string busy = port.address();

  // The service logs at the config's level while it opens: warn, so the failure is alone.
  const std::string config = write_config("metrics-busy.toml", "[log]\nlevel = \"warn\"\n");
  expect_one_line_failure(run_server({"--config", config, "--metrics-listen", busy}), 1,
                          "cannot serve metrics on " + busy + ": Address already in use");
}

}  // namespace
