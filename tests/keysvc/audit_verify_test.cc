#include "keysvc/audit_report.h"
#include "keysvc/audit_verify.h"

#include <gtest/gtest.h>
#include <openssl/rand.h>

#include <filesystem>
#include <memory>

#include "audit_test_log.h"
#include "keysvc/ticket_key_service.h"
#include "test_token.h"

namespace keysvc::audit {
namespace {

namespace fs = std::filesystem;
using test::line_with;
using test::lines_of;
using test::slurp;
using test::spit;

class AuditVerify : public test::AuditTokenTest {
 protected:
  void SetUp() override { make_dir("audit-verify-"); }
  VerifyResult check(const std::vector<std::string>& files) {
    return verify(files, token_view(*gateway_, AuditConfig{}));
  }
  // Rewrites `path` with `edit` applied to its lines.
  template <class F>
  void edit_lines(const std::string& path, F edit) {
    auto ls = lines_of(slurp(path));
    edit(ls);
    spit(path, test::join_lines(ls));
  }
  void expect_failure(const VerifyResult& r, const std::string& file, std::size_t line, Failure why) {
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.first_bad_file, file);
    EXPECT_EQ(r.first_bad_line, line) << r.detail;
    EXPECT_EQ(to_string(r.reason), to_string(why)) << r.detail;
  }
};

TEST_F(AuditVerify, UntouchedLogIsIntact) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  VerifyResult r = check(w.files);
  EXPECT_TRUE(r.ok) << r.first_bad_line << " " << to_string(r.reason) << " " << r.detail;
  EXPECT_EQ(r.reason, Failure::kNone);
  EXPECT_EQ(r.seals, 2u);
  EXPECT_EQ(r.records, lines_of(slurp(w.files[0])).size());
  EXPECT_TRUE(r.from_genesis);
}

TEST_F(AuditVerify, OneEditedByteNamesTheLine) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t line = line_with(w.files[0], "\"issued\":5");
  ASSERT_GT(line, 0u);
  edit_lines(w.files[0], [&](auto& ls) { ls[line - 1].replace(ls[line - 1].find("\"issued\":5"), 10, "\"issued\":4"); });
  expect_failure(check(w.files), w.files[0], line, Failure::kEdited);
}

TEST_F(AuditVerify, EditedByteInAPrevFieldOrSeqNamesTheLine) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t line = line_with(w.files[0], "\"event\":\"revoked\"");
  std::string orig = slurp(w.files[0]);
  edit_lines(w.files[0], [&](auto& ls) {
    auto& l = ls[line - 1];
    std::size_t at = l.find("\"prev\":\"") + 8;
    l[at] = l[at] == '0' ? '1' : '0';
  });
  expect_failure(check(w.files), w.files[0], line, Failure::kEdited);

  spit(w.files[0], orig);
  edit_lines(w.files[0], [&](auto& ls) {
    auto& l = ls[line - 1];
    l[7] = l[7] == '9' ? '8' : static_cast<char>(l[7] + 1);  // {"seq":N -> N+1
  });
  expect_failure(check(w.files), w.files[0], line, Failure::kEdited);

  spit(w.files[0], orig);
  edit_lines(w.files[0], [&](auto& ls) { ls[line - 1][0] = '['; });  // no longer JSON
  expect_failure(check(w.files), w.files[0], line, Failure::kEdited);

  // The prev field of the final seal.
  spit(w.files[0], orig);
  std::size_t last = lines_of(orig).size();
  edit_lines(w.files[0], [&](auto& ls) {
    auto& l = ls.back();
    std::size_t at = l.find("\"prev\":\"") + 8;
    l[at] = l[at] == '0' ? '1' : '0';
  });
  expect_failure(check(w.files), w.files[0], last, Failure::kEdited);
}

TEST_F(AuditVerify, DeletedLineNamesTheGap) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t line = line_with(w.files[0], "\"event\":\"activated\"");
  edit_lines(w.files[0], [&](auto& ls) { ls.erase(ls.begin() + static_cast<long>(line - 1)); });
  expect_failure(check(w.files), w.files[0], line, Failure::kDeleted);
}

TEST_F(AuditVerify, SwappedLinesAreReordered) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t line = line_with(w.files[0], "\"event\":\"generation_created\"");
  edit_lines(w.files[0], [&](auto& ls) { std::swap(ls[line - 1], ls[line]); });
  expect_failure(check(w.files), w.files[0], line, Failure::kReordered);
}

TEST_F(AuditVerify, RemovedSealIsADeletion) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t seal = line_with(w.files[0], "\"event\":\"seal\"");
  ASSERT_LT(seal, lines_of(slurp(w.files[0])).size()) << "a seal in the middle";
  edit_lines(w.files[0], [&](auto& ls) { ls.erase(ls.begin() + static_cast<long>(seal - 1)); });
  expect_failure(check(w.files), w.files[0], seal, Failure::kDeleted);
}

// Lines after the last seal are an unsealed tail; with the token's anchor, a file that
// ends before the seal the anchor names was cut after a seal.
TEST_F(AuditVerify, CutAfterASealIsTruncatedAndTheRestAnUnsealedTail) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t mid_seal = line_with(w.files[0], "\"event\":\"seal\"");
  edit_lines(w.files[0], [&](auto& ls) { ls.pop_back(); });  // the final seal
  const std::size_t remaining = lines_of(slurp(w.files[0])).size();
  expect_failure(check(w.files), w.files[0], remaining + 1, Failure::kTruncated);

  // Without anchors (seals only, as before them): intact up to the seal, the rest pending.
  const KeyedHmac seals_only = token_keyed_hmac(*gateway_);
  VerifyResult r = verify(w.files, seals_only);
  expect_failure(r, w.files[0], mid_seal + 1, Failure::kUnsealedTail);
  EXPECT_EQ(r.last_seal_line, mid_seal);
  EXPECT_EQ(r.last_seal_seq, mid_seal);
  EXPECT_EQ(r.pending, remaining - mid_seal);
  EXPECT_FALSE(r.incomplete_last_line);

  // Cut inside a line: the incomplete last line is part of the unsealed tail.
  std::string text = slurp(w.files[0]);
  spit(w.files[0], text.substr(0, text.size() - 10));
  expect_failure(verify(w.files, seals_only), w.files[0], mid_seal + 1, Failure::kUnsealedTail);
  EXPECT_TRUE(verify(w.files, seals_only).incomplete_last_line);
  EXPECT_EQ(check(w.files).reason, Failure::kTruncated);
}

TEST_F(AuditVerify, WhitespaceTheWriterNeverWritesIsAnEdit) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  const std::size_t last = lines_of(slurp(w.files[0])).size();
  edit_lines(w.files[0], [](auto& ls) { ls.back() += " "; });  // JSON would forgive it
  expect_failure(check(w.files), w.files[0], last, Failure::kMalformed);
}

TEST_F(AuditVerify, BadSealMac) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t seal = line_with(w.files[0], "\"event\":\"seal\"");
  edit_lines(w.files[0], [&](auto& ls) {
    auto& l = ls[seal - 1];
    std::size_t at = l.find("\"mac\":\"") + 7;
    l[at] = l[at] == 'a' ? 'b' : 'a';
  });
  expect_failure(check(w.files), w.files[0], seal, Failure::kBadSeal);
}

TEST_F(AuditVerify, SealUnderAnUnknownKeyIsBad) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  std::size_t seal = line_with(w.files[0], "\"event\":\"seal\"");
  KeyedHmac none = [](std::string_view, std::span<const std::uint8_t>) -> std::optional<Mac> { return std::nullopt; };
  VerifyResult r = verify(w.files, none);
  expect_failure(r, w.files[0], seal, Failure::kBadSeal);
  EXPECT_NE(r.detail.find("no audit key"), std::string::npos) << r.detail;
}

TEST_F(AuditVerify, RotatedFilesChainAndAMissingMiddleFileFails) {
  auto w = test::write_realistic_log(*gateway_, dir_, /*rotate=*/true);
  ASSERT_EQ(w.files.size(), 2u);
  VerifyResult r = check(w.files);
  EXPECT_TRUE(r.ok) << r.first_bad_file << ":" << r.first_bad_line << " " << r.detail;
  EXPECT_EQ(r.seals, 4u);  // middle, at rotation, the new file's first, at close
  EXPECT_NE(slurp(w.files[1]).find("\"prev_file\":\"" + w.files[0] + "\""), std::string::npos);

  // Only the second file: it continues a chain, and verifies on its own.
  VerifyResult second = check({w.files[1]});
  EXPECT_TRUE(second.ok) << second.detail;
  EXPECT_FALSE(second.from_genesis);

  // Three files, the middle one missing: the third's first line says what is gone.
  auto w3 = test::write_realistic_log(*gateway_, dir_ + "/b", true);
  {
    // Continue w3's chain into a third file.
    AuditLog log(w3.files[1], token_sealer(*gateway_), {});
    log.rotate(dir_ + "/b/audit.log.2");
    log.append(ConfigLoaded{"x"});
  }
  std::vector<std::string> all = {w3.files[0], w3.files[1], dir_ + "/b/audit.log.2"};
  EXPECT_TRUE(check(all).ok) << check(all).detail;
  expect_failure(check({w3.files[0], dir_ + "/b/audit.log.2"}), dir_ + "/b/audit.log.2", 1, Failure::kDeleted);
  // Out of order files.
  EXPECT_FALSE(check({w3.files[1], w3.files[0]}).ok);
}

TEST_F(AuditVerify, HostileInputGivesAResult) {
  KeyedHmac hmac = [](std::string_view, std::span<const std::uint8_t>) -> std::optional<Mac> { return Mac{}; };
  auto reason = [&](std::string text) {
    return to_string(verify_texts({{"f", std::move(text)}}, hmac).reason);
  };
  EXPECT_EQ(verify_texts({}, hmac).reason, Failure::kMalformed);
  EXPECT_EQ(reason(""), "malformed");
  EXPECT_EQ(reason("hello\nworld\n"), "malformed");
  EXPECT_EQ(reason(std::string(100000, '[') + "\n"), "malformed");
  EXPECT_EQ(reason("{\"seq\":99999999999999999999999,\"ts\":\"x\"}\n"), "malformed");
  EXPECT_EQ(reason("{\"seq\":1,\"ts\":\"2026-13-45T99:00:00.000Z\",\"event\":\"chain_start\",\"prev\":\"" +
                   std::string(64, '0') + "\"}\n"),
            "malformed");
  std::string ok_start = "{\"seq\":1,\"ts\":\"2026-11-23T12:00:00.000Z\",\"event\":\"chain_start\",\"prev\":\"" +
                         std::string(64, '0') + "\"}\n";
  EXPECT_EQ(reason(ok_start), "unsealed_tail");
  EXPECT_EQ(reason(ok_start + "{\"seq\":2,\"ts\":\"2026-11-23T12:00:00.000Z\",\"event\":\"seal\",\"prev\":\"" +
                   to_hex(sha256(ok_start.substr(0, ok_start.size() - 1))) + "\"}\n"),
            "bad_seal");
  // This version's fields, hostile: a finding that is not an object, names more lines than
  // there are, a chain id that is not one.
  auto start_with = [&](const std::string& fields) {
    return "{\"seq\":1,\"ts\":\"2026-11-23T12:00:00.000Z\",\"event\":\"chain_start\"" + fields + ",\"prev\":\"" +
           std::string(64, '0') + "\"}\n";
  };
  EXPECT_EQ(reason(start_with(",\"chain\":\"zz\",\"found\":5")), "malformed");
  EXPECT_EQ(reason(start_with(",\"found\":{\"lines\":99999999999}")), "deleted");
  EXPECT_EQ(reason(start_with(",\"found\":{\"lines\":0,\"reason\":[1]}")), "malformed");
  EXPECT_EQ(reason(ok_start + start_with(",\"found\":{\"lines\":1,\"reason\":\"unsealed\",\"sha256\":\"00\"}")),
            "edited");
  for (int k = 0; k < 200; ++k) {  // random bytes, random cuts of a real-looking line
    std::string junk(static_cast<std::size_t>(k * 7 % 300), '\0');
    RAND_bytes(reinterpret_cast<unsigned char*>(junk.data()), static_cast<int>(junk.size()));
    auto r = verify_texts({{"f", ok_start.substr(0, static_cast<std::size_t>(k) % ok_start.size()) + junk}}, hmac);
    EXPECT_FALSE(r.ok);
    (void)report_texts({{"f", junk + ok_start}}, {});
  }
}

TEST_F(AuditVerify, ReportTotalsEqualTheUsageWritten) {
  auto w = test::write_realistic_log(*gateway_, dir_, true);
  Report rep = report(w.files, {});
  ASSERT_EQ(rep.keys.size(), 3u);
  EXPECT_EQ(rep.unreadable, 0u);
  for (const auto& k : rep.keys) {
    auto name = key_name_from_hex(k.name);
    ASSERT_TRUE(name);
    EXPECT_EQ(k.totals, w.totals[*name]) << k.name;
  }
  auto find = [&](const KeyName& n) -> const KeyReport& {
    for (const auto& k : rep.keys)
      if (k.name == to_hex(n)) return k;
    throw std::runtime_error("no key");
  };
  const KeyReport& a = find(w.a);
  EXPECT_EQ(a.totals[0], 5u);
  EXPECT_EQ(a.totals[1], 5u);
  EXPECT_EQ(a.totals[2], 2u);
  EXPECT_TRUE(a.created && a.activated && a.decrypt_only && a.revoked && a.destroyed);
  EXPECT_LE(*a.created, *a.revoked);
  EXPECT_FALSE(find(w.b).revoked);

  std::map<std::string, std::string> kinds;
  for (const auto& an : rep.anomalies) kinds[an.kind] = an.name;
  EXPECT_EQ(kinds.count("unknown_key_name"), 1u);
  EXPECT_EQ(kinds["unknown_key_name"], to_hex(w.unknown));
  EXPECT_EQ(kinds["ticket_under_revoked_key"], to_hex(w.a));
  EXPECT_EQ(kinds.count("mac_failure_spike"), 0u);
  ReportOptions spiky;
  spiky.mac_failure_spike = 1;
  Report rep2 = report(w.files, spiky);
  bool spike = false;
  for (const auto& an : rep2.anomalies) spike |= an.kind == "mac_failure_spike" && an.count == 1;
  EXPECT_TRUE(spike);

  // Nothing after the end of time; everything since the epoch.
  ReportOptions future;
  future.since = *parse_time("2999-01-01");
  EXPECT_EQ(report(w.files, future).records, 0u);
  ReportOptions past;
  past.until = *parse_time("0");
  EXPECT_EQ(report(w.files, past).records, 0u);
  ReportOptions all;
  all.since = *parse_time("0");
  EXPECT_EQ(report(w.files, all).records, rep.records);
}

// The lifecycle rules of report() on hand-made records (the chain is not report's
// business): the records' times decide, whatever file they come in.
TEST(AuditReport, LifecycleRulesUseThePeriodStart) {
  const std::string a(32, 'a'), b(32, 'b'), c(32, 'c');
  int seq = 0;
  auto rec = [&](const std::string& ts, const std::string& fields) {
    return "{\"seq\":" + std::to_string(++seq) + ",\"ts\":\"2026-11-23T12:" + ts + ".000Z\"," + fields +
           ",\"prev\":\"" + std::string(64, '0') + "\"}\n";
  };
  auto created = [&](const std::string& ts, const std::string& name, int encrypt_from) {
    return rec(ts, "\"event\":\"generation_created\",\"name\":\"" + name +
                       "\",\"encrypt_from\":" + std::to_string(encrypt_from));
  };
  auto event = [&](const std::string& ts, const std::string& e, const std::string& name) {
    return rec(ts, "\"event\":\"" + e + "\",\"name\":\"" + name + "\"");
  };
  auto usage = [&](const std::string& ts, const std::string& from, const std::string& name, int issued) {
    return rec(ts, "\"event\":\"usage\",\"period_start\":\"2026-11-23T12:" + from +
                       ".000Z\",\"keys\":{\"" + name + "\":{\"issued\":" + std::to_string(issued) +
                       ",\"resumed\":1}}");
  };
  // keysvcctl: a at 01:00, b (later encrypt_from) activated at 05:00 without a
  // decrypt_only record for a, c revoked at 05:00.
  const std::string ctl = created("00:00", a, 100) + event("01:00", "activated", a) + created("04:00", b, 200) +
                          created("04:00", c, 300) + event("05:00", "activated", b) + event("05:00", "revoked", c);
  // The server: a period spanning 05:00, one after it, another after a is activated again.
  const std::string server = usage("06:00", "03:00", a, 2) + usage("06:00", "03:00", c, 4) +
                             usage("07:00", "06:00", a, 3) + usage("07:00", "06:00", c, 5) +
                             event("08:00", "activated", a) + usage("09:00", "08:30", a, 7);
  for (const auto& files : {std::vector<LogText>{{"ctl", ctl}, {"server", server}},
                            std::vector<LogText>{{"server", server}, {"ctl", ctl}}}) {
    Report rep = report_texts(files, {});
    std::map<std::string, std::pair<std::uint64_t, std::size_t>> found;  // kind/name -> count, line
    for (const auto& an : rep.anomalies) found[an.kind + "/" + an.name.substr(0, 1)] = {an.count, an.line};
    EXPECT_EQ(found.size(), 2u);
    EXPECT_EQ(found["issued_after_decrypt_only/a"], (std::pair<std::uint64_t, std::size_t>{3, 3}));
    EXPECT_EQ(found["used_after_revocation/c"], (std::pair<std::uint64_t, std::size_t>{5 + 1, 4}));
    EXPECT_EQ(rep.usage.size(), 5u);
  }
}

// A generation whose keys were once outside the token (key_custody.h) is an anomaly as
// soon as a writer records it: once per name, counting every record of it.
TEST(AuditReport, KeyNotHeldInTokenIsAnAnomaly) {
  const std::string good(32, 'a'), planted(32, 'b');
  int seq = 0;
  auto created = [&](const std::string& name, bool held) {
    const std::string key = std::string("{\"sensitive\":true,\"held_in_token\":") + (held ? "true" : "false") + "}";
    const int n = ++seq;
    return "{\"seq\":" + std::to_string(n) + ",\"ts\":\"2026-11-23T12:00:0" + std::to_string(n) +
           ".000Z\",\"event\":\"generation_created\",\"name\":\"" + name + "\",\"enc_key\":" + key +
           ",\"mac_key\":" + key + ",\"prev\":\"" + std::string(64, '0') + "\"}\n";
  };
  Report rep = report_texts({{"ctl", created(good, true) + created(planted, false)}, {"server", created(planted, false)}},
                            {});
  ASSERT_EQ(rep.anomalies.size(), 1u);
  EXPECT_EQ(rep.anomalies[0].kind, "key_not_held_in_token");
  EXPECT_EQ(rep.anomalies[0].name, planted);
  EXPECT_EQ(rep.anomalies[0].count, 2u);
}

TEST(AuditTime, ParseTime) {
  EXPECT_EQ(parse_time("1795435200"), 1795435200000);
  EXPECT_EQ(parse_time("2026-11-23T12:00:00Z"), 1795435200000);
  EXPECT_EQ(parse_time("2026-11-23T12:00:00.123Z"), 1795435200123);
  EXPECT_EQ(parse_time("2026-11-23"), 1795392000000);
  EXPECT_FALSE(parse_time("2026-02-31"));
  EXPECT_FALSE(parse_time("yesterday"));
  EXPECT_FALSE(parse_time("2026-11-23T12:00:00+01:00"));
  EXPECT_EQ(iso8601_ms(1795435200123), "2026-11-23T12:00:00.123Z");
}

}  // namespace
}  // namespace keysvc::audit
