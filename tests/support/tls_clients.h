// Real TLS clients against the web servers the tests start (nginx, Apache httpd):
// openssl s_client and curl, each request one new connection. The servers answer every
// request with one line naming the process that served it and whether the TLS session
// was resumed:
//   pid=1234 reused=r protocol=TLSv1.3          ("r" resumed, "." full handshake)
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "process.h"
#include "tls_server_process.h"  // TlsVersion, tls_version_name(), describe()

namespace keysvc::test {

inline constexpr char kServerBodyPattern[] = R"(pid=(\d+) reused=([r.]) protocol=(TLSv1\.[23]))";

// "tls13" / "tls12", for INSTANTIATE_TEST_SUITE_P.
std::string version_param_name(const ::testing::TestParamInfo<TlsVersion>& info);

// What one request saw.
struct Answer {
  bool ok = false;
  pid_t pid = 0;
  bool reused = false;
  std::string protocol;
  std::string detail;  // the client's output, for messages
};

// The first server answer line in `text`.
Answer parse_answer(const std::string& text);

// openssl s_client: one HTTP request to 127.0.0.1:port as "localhost", the certificate
// verified against `ca`, the whole response read (so TLS 1.3 tickets, sent after the
// handshake, are in). Offers the session in `sess_in` if not empty; saves the session
// (with the newest ticket) to `sess_out` if not empty. ok only if the handshake
// verified, the server answered and the client's own view (New/Reused, protocol)
// agrees with the server's.
Answer s_client_request(int port, TlsVersion v, const std::string& ca, const std::string& sess_in,
                        const std::string& sess_out);

// The ticket's key name (its first 16 bytes, hex) in an s_client session file; empty if
// the session carries no ticket.
std::string ticket_key_name(const std::string& sess_file);

// curl: `count` requests in one invocation, each on a new connection (Connection:
// close), every connection after the first offering curl's newest session. curl (7.88,
// OpenSSL backend) sets SSL_OP_NO_TICKET, so in TLS 1.2 it resumes by session ID only:
// use TLS 1.3 for tickets.
std::vector<Answer> curl_requests(int port, TlsVersion v, const std::string& ca, int count, std::string& detail);

}  // namespace keysvc::test
