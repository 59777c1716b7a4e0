#include "tls_clients.h"

#include <cctype>
#include <regex>

namespace keysvc::test {

using namespace std::chrono_literals;

namespace {
constexpr auto kClientTimeout = 20s;
}

std::string version_param_name(const ::testing::TestParamInfo<TlsVersion>& info) {
  return info.param == TlsVersion::kTls13 ? "tls13" : "tls12";
}

Answer parse_answer(const std::string& text) {
  Answer a;
  std::smatch m;
  if (std::regex_search(text, m, std::regex(kServerBodyPattern))) {
    a.ok = true;
    a.pid = static_cast<pid_t>(std::stol(m[1]));
    a.reused = m[2] == "r";
    a.protocol = m[3];
  }
  return a;
}

Answer s_client_request(int port, TlsVersion v, const std::string& ca, const std::string& sess_in,
                        const std::string& sess_out) {
  std::vector<std::string> argv = {"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port),
                                   "-servername", "localhost", v == TlsVersion::kTls13 ? "-tls1_3" : "-tls1_2",
                                   "-CAfile", ca, "-verify_return_error", "-verify_hostname", "localhost",
                                   "-ign_eof"};
  if (!sess_in.empty()) argv.insert(argv.end(), {"-sess_in", sess_in});
  if (!sess_out.empty()) argv.insert(argv.end(), {"-sess_out", sess_out});
  RunResult r = run(argv, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", kClientTimeout);
  Answer a = parse_answer(r.out);
  a.detail = describe(r);
  if (r.exit_code != std::optional<int>(0) || r.out.find("Verify return code: 0 (ok)") == std::string::npos) {
    a.ok = false;
  }
  const std::string client_says = std::string(a.reused ? "Reused, " : "New, ") + tls_version_name(v);
  if (a.ok && r.out.find(client_says) == std::string::npos) a.ok = false;
  return a;
}

std::string ticket_key_name(const std::string& sess_file) {
  RunResult r = run({"openssl", "sess_id", "-in", sess_file, "-noout", "-text"}, "", kClientTimeout);
  std::smatch m;
  // "TLS session ticket:\n    0000 - 3f 1a ... 16 bytes ..."
  if (!std::regex_search(r.out, m, std::regex(R"(TLS session ticket:\s*\n\s*0000 - ((?:[0-9a-f]{2}[ -]){16}))"))) {
    return {};
  }
  std::string hex;
  for (char c : std::string(m[1])) {
    if (std::isxdigit(static_cast<unsigned char>(c))) hex += c;
  }
  return hex;
}

std::vector<Answer> curl_requests(int port, TlsVersion v, const std::string& ca, int count, std::string& detail) {
  std::vector<std::string> argv = {"curl", "--silent", "--show-error", "--cacert", ca,
                                   "--resolve", "localhost:" + std::to_string(port) + ":127.0.0.1",
                                   "-H", "Connection: close"};
  if (v == TlsVersion::kTls13) {
    argv.insert(argv.end(), {"--tlsv1.3", "--tls-max", "1.3"});
  } else {
    argv.insert(argv.end(), {"--tlsv1.2", "--tls-max", "1.2"});
  }
  for (int i = 0; i < count; ++i) argv.push_back("https://localhost:" + std::to_string(port) + "/");
  RunResult r = run(argv, "", kClientTimeout);
  detail = describe(r);
  std::vector<Answer> answers;
  const std::regex body(kServerBodyPattern);
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), body); it != std::sregex_iterator(); ++it) {
    answers.push_back(parse_answer((*it)[0]));
  }
  return answers;
}

}  // namespace keysvc::test
