// `keysvcctl audit report --html` rendered in a real browser (Debian's chromium,
// headless): real audit files from keysvcctl and keysvc-tls-server (TLS 1.3 full
// handshakes and a resumption, a TLS 1.2 ticket under a forged key name, then `keys
// generate` while the server keeps issuing under the old generation), the page written
// with --config (seals verified in the token), then chromium's DOM after the page's
// script ran: the timeline, charts and seal coverage hold the counts the report's JSON
// gives, every link resolves to a record line, and a screenshot is taken.
//
// The page, its DOM and the screenshot stay under $KEYSVC_TEST_TMPDIR/logs/audit_html/.
#include <gtest/gtest.h>
#include <openssl/pem.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "audit_scenario.h"
#include "chromium.h"
#include "keysvc/key_name.h"
#include "tls_pair.h"

namespace {

using keysvc::test::AuditScenario;
using keysvc::test::describe;
using keysvc::test::read_file;
using keysvc::test::RunResult;
using keysvc::test::TlsVersion;
using Json = nlohmann::json;

// Every match of `pattern`'s first group in `text`.
std::vector<std::string> all(const std::string& text, const std::string& pattern) {
  std::vector<std::string> out;
  const std::regex re(pattern);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

// The text of the first element `<svg class="chart SERIES" ...>...</svg>`.
std::string chart(const std::string& dom, const std::string& series) {
  const std::size_t at = dom.find("<svg class=\"chart " + series + "\"");
  return at == std::string::npos ? std::string() : dom.substr(at, dom.find("</svg>", at) - at);
}

std::uint64_t sum(const std::vector<std::string>& numbers) {
  std::uint64_t n = 0;
  for (const auto& s : numbers) n += std::stoull(s);
  return n;
}

// A TLS 1.2 session whose ticket names no generation (its first byte flipped); its name.
std::string forge(const std::string& from, const std::string& to) {
  BIO* in = BIO_new_file(from.c_str(), "r");
  keysvc::test::SessionPtr session(in ? PEM_read_bio_SSL_SESSION(in, nullptr, nullptr, nullptr) : nullptr);
  BIO_free(in);
  if (!session) return {};
  auto ticket = keysvc::test::ticket_of(session.get());
  if (ticket.size() < 16) return {};
  ticket[0] ^= 0xff;
  keysvc::KeyName name{};
  std::copy(ticket.begin(), ticket.begin() + 16, name.begin());
  auto forged = keysvc::test::with_ticket(session.get(), ticket);
  BIO* out = BIO_new_file(to.c_str(), "w");
  const bool written = out && PEM_write_bio_SSL_SESSION(out, forged.get()) == 1;
  BIO_free(out);
  return written ? keysvc::to_hex(name) : std::string();
}

TEST(AuditHtml, ChromiumRendersTimelineChartsCoverageAndLinkedAnomalies) {
  ASSERT_FALSE(keysvc::test::chromium_binary().empty()) << "chromium is not installed (tools/install-deps.sh)";
  AuditScenario s("audit_html/page", KEYSVCCTL_BIN, KEYSVC_TLS_SERVER_BIN, {.summary_interval = "1s"});
  const std::string g1 = s.generate();
  ASSERT_FALSE(g1.empty());
  auto server = s.start_server();
  const int port = server->port();
  auto sessions = s.full_handshakes(port, 2);
  RunResult resumed = keysvc::test::s_client(port, TlsVersion::kTls13, "-sess_in", sessions[0]);
  ASSERT_NE(resumed.out.find("Reused, TLSv1.3"), std::string::npos) << describe(resumed);
  const std::string tls12 = s.dir() + "/sessions/tls12.pem", forged_file = s.dir() + "/sessions/forged.pem";
  RunResult full12 = keysvc::test::s_client(port, TlsVersion::kTls12, "-sess_out", tls12);
  ASSERT_NE(full12.out.find("New, TLSv1.2"), std::string::npos) << describe(full12);
  const std::string forged = forge(tls12, forged_file);
  ASSERT_FALSE(forged.empty());
  RunResult unknown = keysvc::test::s_client(port, TlsVersion::kTls12, "-sess_in", forged_file);
  ASSERT_NE(unknown.out.find("New, TLSv1.2"), std::string::npos) << describe(unknown);
  // The old generation keeps issuing after keysvcctl made a new one the encrypt generation.
  const std::string g2 = s.generate_successor();
  ASSERT_FALSE(g2.empty());
  const auto decrypt_only = AuditScenario::event_time(s.ctl_log(), "decrypt_only", g1);
  ASSERT_TRUE(decrypt_only) << read_file(s.ctl_log());
  ASSERT_TRUE(s.wait_for_issued_after(port, g1, *decrypt_only));
  server->stop();

  const std::vector<std::string> files = {s.ctl_log(), s.server_log()};
  RunResult json_run = s.ctl({"audit", "report", "--json", files[0], files[1]}, false);
  ASSERT_EQ(json_run.exit_code, std::optional<int>(0)) << describe(json_run);
  const Json rep = Json::parse(json_run.out);
  std::map<std::string, std::uint64_t> totals;
  for (const auto& k : rep["keys"]) {
    totals["issued"] += k["issued"].get<std::uint64_t>();
    totals["resumed"] += k["resumed"].get<std::uint64_t>();
    for (const auto& [why, n] : k["rejected"].items()) totals["rejected"] += n.get<std::uint64_t>();
  }
  ASSERT_EQ(totals["rejected"], 1u) << "the forged ticket";
  ASSERT_GE(totals["resumed"], 1u);

  const std::string html = s.dir() + "/report.html";
  RunResult page = s.ctl({"audit", "report", "--html", html, files[0], files[1]});
  ASSERT_EQ(page.exit_code, std::optional<int>(0)) << describe(page);
  const std::string source = read_file(html);
  // Self-contained: a policy that forbids fetching, nothing to fetch.
  EXPECT_TRUE(std::regex_search(source, std::regex("http-equiv=\"Content-Security-Policy\"\\s+content=\"default-src 'none';")));
  EXPECT_EQ(source.find(" src="), std::string::npos);
  EXPECT_EQ(source.find("<link"), std::string::npos);
  EXPECT_EQ(source.find("url("), std::string::npos);

  RunResult dump = keysvc::test::chromium_dump_dom(html);
  ASSERT_EQ(dump.exit_code, std::optional<int>(0)) << describe(dump);
  const std::string& dom = dump.out;
  std::ofstream(s.dir() + "/report.dom.html") << dom;
  EXPECT_NE(dom.find("data-ready=\"1\""), std::string::npos) << "the page's script did not run";

  // Timeline: g1 and g2 (the forged name is no generation), keysvcctl's lifecycle records.
  const auto generations = all(dom, "<g class=\"generation\" data-name=\"([0-9a-f]{32})\"");
  EXPECT_EQ(std::set<std::string>(generations.begin(), generations.end()), (std::set<std::string>{g1, g2}));
  std::map<std::string, int> marks;
  for (const auto& e : all(dom, "<circle class=\"mark [^\"]*\" data-event=\"([a-z_]+)\"")) ++marks[e];
  EXPECT_EQ(marks, (std::map<std::string, int>{{"generation_created", 2}, {"activated", 2}, {"decrypt_only", 1}}));
  EXPECT_EQ(all(dom, "data-phase=\"(decrypt-only)\"").size(), 1u);

  // Charts: one bar per usage record, summing to the report's totals.
  for (const std::string series : {"issued", "resumed", "rejected"}) {
    const std::string c = chart(dom, series);
    ASSERT_FALSE(c.empty()) << series;
    const auto counts = all(c, "<rect class=\"bar [a-z]+\" [^>]*data-count=\"(\\d+)\"");
    EXPECT_EQ(counts.size(), rep["usage_records"].get<std::size_t>()) << series;
    EXPECT_EQ(sum(counts), totals[series]) << series;
  }

  // Seal coverage: both files covered by seals verified in the token, every seal verified.
  EXPECT_EQ(all(dom, "<g class=\"coverage\" data-file=\"(\\d)\"").size(), 2u);
  EXPECT_EQ(all(dom, "<rect class=\"span [a-z]+\" [^>]*data-kind=\"([a-z]+)\""),
            (std::vector<std::string>{"covered", "covered"}));
  EXPECT_EQ(all(dom, "data-verified=\"(true)\"").size(), rep["seals"].get<std::size_t>());
  EXPECT_TRUE(all(dom, "data-verified=\"(false)\"").empty());

  // Anomalies, each linking to its record; every link of the page resolves.
  std::map<std::string, int> kinds;
  for (const auto& k : all(dom, "<tr class=\"anomaly\" data-kind=\"([a-z_]+)\"")) ++kinds[k];
  EXPECT_EQ(kinds, (std::map<std::string, int>{{"unknown_key_name", 1}, {"issued_after_decrypt_only", 1}}));
  const auto targets = all(dom, "href=\"#([^\"]+)\"");
  EXPECT_GT(targets.size(), 10u);
  for (const auto& id : std::set<std::string>(targets.begin(), targets.end()))
    EXPECT_NE(dom.find("id=\"" + id + "\""), std::string::npos) << "no element #" << id;

  const std::string png = s.dir() + "/report.png";
  RunResult shot = keysvc::test::chromium_screenshot(html, png, 1280, 1700);
  ASSERT_EQ(shot.exit_code, std::optional<int>(0)) << describe(shot);
  const std::string image = read_file(png);
  ASSERT_GT(image.size(), 24u);
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const auto be32 = [&](std::size_t at) {
    return (static_cast<unsigned>(static_cast<unsigned char>(image[at])) << 24) |
           (static_cast<unsigned>(static_cast<unsigned char>(image[at + 1])) << 16) |
           (static_cast<unsigned>(static_cast<unsigned char>(image[at + 2])) << 8) |
           static_cast<unsigned>(static_cast<unsigned char>(image[at + 3]));
  };
  EXPECT_EQ(be32(16), 1280u);  // IHDR width
  EXPECT_EQ(be32(20), 1700u);  // IHDR height
}

}  // namespace
