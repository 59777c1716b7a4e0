// Anchors in a real SoftHSM token (keysvc/audit_anchor.h): their value's format, the
// retention sweep that keeps their number bounded, a file whose anchor was swept, a file
// that ends inside a line, and writers whose clock steps back.
#include "keysvc/audit_anchor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "audit_test_log.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_verify.h"
#include "keysvc/hsm/object.h"
#include "keysvc/token_store.h"

namespace keysvc::audit {
namespace {

using test::lines_of;
using test::slurp;
using namespace std::chrono_literals;

class AuditAnchor : public test::AuditTokenTest {
 protected:
  void SetUp() override { make_dir("audit-anchor-"); }
  TokenView view(std::chrono::milliseconds retention = 0ms) {
    AuditConfig c;
    c.anchor_retention = std::chrono::duration_cast<std::chrono::seconds>(retention);
    return token_view(*gateway_, c);
  }
  // The labels of every anchor and pending mark in the token.
  std::vector<std::string> audit_objects() {
    return gateway_->call([](hsm::Session& s) {
      std::vector<std::string> out;
      for (CK_OBJECT_HANDLE h :
           hsm::find_objects(s, {.object_class = CKO_DATA, .application = token_store::kApplication})) {
        hsm::Bytes l = hsm::get_attribute(s, h, CKA_LABEL);
        std::string label(l.begin(), l.end());
        if (label.starts_with("keysvc-audit-")) out.push_back(label);
      }
      return out;
    });
  }
};

TEST_F(AuditAnchor, ValuesRoundTripAndOddBytesStayOnTheirLine) {
  Anchor a;
  a.chain = new_chain_id();
  a.writer = "server";
  a.host = "web1";
  a.file = "/var/log/a%b\nc/audit.jsonl";
  a.created_ms = 1'795'435'200'000;
  a.first = 1;
  a.sealed = 41;
  a.head.fill(0xab);
  a.seal = 42;
  a.seal_hash.fill(0xcd);
  a.offset = 12345;
  a.sealed_at_ms = a.created_ms + 5;
  const std::string text = a.format();
  EXPECT_NE(text.find("\nfile=/var/log/a%25b%0Ac/audit.jsonl\n"), std::string::npos) << text;
  auto back = Anchor::parse(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->format(), text);
  EXPECT_EQ(back->file, a.file);
  EXPECT_FALSE(Anchor::parse("keysvc-audit-anchor v2\nchain=" + to_hex(a.chain) + "\n"));
  EXPECT_FALSE(Anchor::parse(text.substr(0, text.size() / 2)));
  PendingMark m{7, {{3, 5, a.head, a.seal_hash}, {9, 9, a.seal_hash, a.head}}};
  auto mark = PendingMark::parse(m.format());
  ASSERT_TRUE(mark);
  ASSERT_EQ(mark->ranges.size(), 2u);
  EXPECT_EQ(mark->ranges[1].first_seq, 9u);
  EXPECT_EQ(mark->format(), m.format());
  EXPECT_FALSE(PendingMark::parse("keysvc-audit-pending v1\nwritten=1\nrange=5 3 x y\n"));
}

// Writers that come and go (nginx workers, one file per pid) leave one anchor each; a
// writer starting a new chain removes those whose last seal is older than the retention.
TEST_F(AuditAnchor, OldAnchorsAreSweptWhenANewChainStarts) {
  const auto old_clock = [] { return std::chrono::system_clock::now() - std::chrono::hours(24 * 40); };
  for (int k = 0; k < 5; ++k) {
    AuditLog::Options o;
    o.clock = old_clock;  // 40 days ago
    AuditLog log(dir_ + "/audit-" + std::to_string(1000 + k) + ".jsonl", token_sealer(*gateway_), o);
    log.append(ConfigLoaded{"worker"});
  }
  {
    AuditLog recent(dir_ + "/audit-2000.jsonl", token_sealer(*gateway_), {});
    recent.append(ConfigLoaded{"worker"});
  }
  EXPECT_EQ(audit_objects().size(), 6u);
  // The 40-day-old files verify against their anchors while those are there.
  EXPECT_TRUE(verify({dir_ + "/audit-1000.jsonl"}, view(30 * 24h)).anchored);
  {
    AuditLog::Options o;
    o.anchor_retention = 30 * 24h;
    AuditLog next(dir_ + "/audit-3000.jsonl", token_sealer(*gateway_), o);
  }
  EXPECT_EQ(audit_objects().size(), 2u) << "the recent writer's and the new one's";
  // A swept file still verifies, as far as it can without its anchor.
  VerifyResult r = verify({dir_ + "/audit-1000.jsonl"}, view(30 * 24h));
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_FALSE(r.anchored);
  EXPECT_NE(r.unchecked.find("older than audit.anchor_retention"), std::string::npos) << r.unchecked;
  // Within the retention, a missing anchor is a file from elsewhere.
  EXPECT_EQ(verify({dir_ + "/audit-1000.jsonl"}, view(60 * 24h)).reason, Failure::kForeign);
}

// A writer that died inside a line: the next one ends that line and does not seal over it.
TEST_F(AuditAnchor, AFileEndingInsideALineIsFoundUnsealed) {
  const std::string path = dir_ + "/partial.jsonl";
  {
    AuditLog log(path, token_sealer(*gateway_), {});
    log.append(ConfigLoaded{"first"});
  }
  const std::size_t sealed = lines_of(slurp(path)).size();
  std::ofstream(path, std::ios::app) << "{\"seq\":" << sealed + 1 << ",\"ts\":\"2026-";
  {
    AuditLog log(path, token_sealer(*gateway_), {});
    log.append(ConfigLoaded{"second"});
  }
  auto ls = lines_of(slurp(path));
  ASSERT_GT(ls.size(), sealed + 1);
  EXPECT_EQ(ls[sealed], "{\"seq\":" + std::to_string(sealed + 1) + ",\"ts\":\"2026-") << "ended, as found";
  EXPECT_NE(ls[sealed + 1].find("\"event\":\"chain_start\""), std::string::npos) << ls[sealed + 1];
  VerifyResult r = verify({path}, view());
  EXPECT_EQ(r.reason, Failure::kUnverifiedTail) << r.detail;
  EXPECT_EQ(r.first_bad_line, sealed + 1);
}

// A clock that steps back does not make records go back in time: verify checks that.
TEST_F(AuditAnchor, RecordsNeverGoBackInTimeWhenTheClockDoes) {
  const std::string path = dir_ + "/clock.jsonl";
  auto now = std::make_shared<std::chrono::system_clock::time_point>(std::chrono::system_clock::now());
  {
    AuditLog::Options o;
    o.clock = [now] { return *now; };
    AuditLog log(path, token_sealer(*gateway_), o);
    log.append(ConfigLoaded{"before"});
    *now -= 10min;  // NTP steps the clock back
    log.append(ConfigLoaded{"after"});
  }
  std::regex ts(R"re("ts":"([^"]+)")re");
  std::string last;
  for (const auto& l : lines_of(slurp(path))) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(l, m, ts));
    EXPECT_LE(last, m[1].str()) << l;
    last = m[1];
  }
  EXPECT_TRUE(verify({path}, view()).ok);
}

}  // namespace
}  // namespace keysvc::audit
