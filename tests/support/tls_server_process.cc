#include "tls_server_process.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <stdexcept>

#include "test_token.h"

namespace keysvc::test {

namespace {
constexpr auto kClientTimeout = std::chrono::seconds(15);
constexpr char kRequest[] = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";

// bin on 127.0.0.1 and a free port with the test certificate and key, then `args`.
std::vector<std::string> server_argv(const std::string& bin, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {bin, "--listen", "127.0.0.1:0", "--cert", tls_cert_path(), "--key", tls_key_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}
}  // namespace

std::string tls_test_dir() {
  std::string dir = TestToken::get().dir() + "/tls";
  std::filesystem::create_directories(dir);
  return dir;
}
std::string tls_cert_path() { return tls_test_dir() + "/server.crt"; }
std::string tls_key_path() { return tls_test_dir() + "/server.key"; }

std::string describe(const RunResult& r) {
  return "exit " + (r.exit_code ? std::to_string(*r.exit_code) : std::string("(timed out)")) + "\n--- stdout\n" +
         r.out + "\n--- stderr\n" + r.err;
}

TlsServerProcess::TlsServerProcess(const std::string& bin, Options o) {
  std::vector<std::string> args = {"--tickets", o.tickets, "--threads", "2", "--log-level", "debug"};
  if (o.tickets == "keysvc") {
    args.push_back("--config");
    args.push_back(o.config.empty() ? TestToken::get().config_path() : o.config);
  }
  args.insert(args.end(), o.extra.begin(), o.extra.end());
  process_ = std::make_unique<Process>(server_argv(bin, args));
  if (o.wait) wait_until_listening();
}

void TlsServerProcess::wait_until_listening() {
  auto m = process_->wait_for_stderr(std::regex(R"(listening on 127\.0\.0\.1:(\d+)\n)"), kStartTimeout);
  if (!m) {
    throw std::runtime_error("server did not start: " + process_->command_line() + "\n--- stderr\n" +
                             process_->err());
  }
  port_ = std::stoi((*m)[1]);
}

std::optional<int> TlsServerProcess::metrics_port() const {
  std::smatch m;
  const std::string err = process_->err();
  if (!std::regex_search(err, m, std::regex(R"(metrics on http://127\.0\.0\.1:(\d+)/metrics\n)"))) return std::nullopt;
  return std::stoi(m[1]);
}

std::string TlsServerProcess::stop(int sig) {
  process_->signal(sig);
  auto code = process_->wait(kStopTimeout);
  std::string err = process_->err();
  EXPECT_EQ(code, std::optional<int>(0)) << "server stderr:\n" << err;
  EXPECT_EQ(err.find(TestToken::get().pin()), std::string::npos) << "the PIN appears in the server's log";
  return err;
}

RunResult run_tls_server(const std::string& bin, const std::vector<std::string>& args,
                         std::chrono::milliseconds timeout) {
  return run(server_argv(bin, args), "", timeout);
}

const char* tls_version_name(TlsVersion v) { return v == TlsVersion::kTls13 ? "TLSv1.3" : "TLSv1.2"; }
void PrintTo(TlsVersion v, std::ostream* os) { *os << tls_version_name(v); }

RunResult s_client(int port, TlsVersion v, const std::string& sess_flag, const std::string& sess_file) {
  return run({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-servername", "localhost",
              v == TlsVersion::kTls13 ? "-tls1_3" : "-tls1_2", "-CAfile", tls_cert_path(), "-verify_return_error",
              "-verify_hostname", "localhost", "-ign_eof", sess_flag, sess_file},
             kRequest, kClientTimeout);
}

}  // namespace keysvc::test
