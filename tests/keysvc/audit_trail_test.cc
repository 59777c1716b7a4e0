// AuditTrail against a real SoftHSM token: per-writer files and locks, lifecycle records
// from ring changes, the HSM error rate limit, login failures without a token, and the
// off switch.
#include "keysvc/audit_trail.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "keysvc/audit_verify.h"
#include "keysvc/audit_key.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/rotation.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/token_store.h"
#include "test_helpers.h"

namespace keysvc::audit {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class AuditTrailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    dir_ = test::TestToken::get().dir() + "/trail-" + test::random_text(6);
    std::filesystem::create_directories(dir_);
    config_ = test::TestToken::get().config();
    config_.audit.path = dir_ + "/audit.jsonl";
    config_.source = "/etc/keysvc/keysvc.toml";
    gateway_ = TokenGateway::open(config_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  bool verifies(const std::string& path) { return verify({path}, token_view(*gateway_, config_.audit)).ok; }

  std::string dir_;
  Config config_;
  std::unique_ptr<TokenGateway> gateway_;
};

TEST_F(AuditTrailTest, OffWithoutAPath) {
  Config off = config_;
  off.audit.path.clear();
  EXPECT_EQ(AuditTrail::open(off, Writer::kServer, gateway_.get()), nullptr);
  EXPECT_EQ(log_path(off.audit, Writer::kTool), "");
}

TEST_F(AuditTrailTest, EachWriterHasItsOwnLockedFile) {
  EXPECT_EQ(log_path(config_.audit, Writer::kServer), dir_ + "/audit.jsonl");
  EXPECT_EQ(log_path(config_.audit, Writer::kTool), dir_ + "/audit-keysvcctl.jsonl");
  auto server = AuditTrail::open(config_, Writer::kServer, gateway_.get());
  try {
    AuditTrail::open(config_, Writer::kServer, gateway_.get());
    ADD_FAILURE() << "a second server on the same file must fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another process"), std::string::npos) << e.what();
  }
  auto tool = AuditTrail::open(config_, Writer::kTool, gateway_.get());  // its own file: no wait
  tool->close();
  server->close();
  EXPECT_NE(slurp(config_.audit.path).find("\"event\":\"config_loaded\",\"path\":\"/etc/keysvc/keysvc.toml\""),
            std::string::npos);
  EXPECT_TRUE(verifies(config_.audit.path));
  EXPECT_TRUE(verifies(log_path(config_.audit, Writer::kTool)));
}

// Whoever may read the log cannot keep its writer out: the lock is on LOG.lock, which
// only the writer's user may open (0600), not on the log (a reader's flock on the log
// stopped a server from starting).
TEST_F(AuditTrailTest, AReaderOfTheLogCannotHoldTheWriterOut) {
  { AuditTrail::open(config_, Writer::kServer, gateway_.get())->close(); }
  const int reader = ::open(config_.audit.path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  ASSERT_EQ(::flock(reader, LOCK_EX | LOCK_NB), 0);
  auto server = AuditTrail::open(config_, Writer::kServer, gateway_.get());
  EXPECT_NE(server, nullptr);
  const std::string lock = config_.audit.path + std::string(kLockSuffix);
  EXPECT_EQ(std::filesystem::status(lock).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  server->close();
  ::close(reader);
  EXPECT_TRUE(verifies(config_.audit.path));
}

// A symlink at the audit path (planted in a writable log folder) is not followed: the
// trail does not open, and nothing is created or written where it points.
TEST_F(AuditTrailTest, ASymlinkedPathIsRefused) {
  const std::string target = dir_ + "/elsewhere.txt";
  std::filesystem::create_symlink(target, config_.audit.path);  // dangling
  EXPECT_THROW(AuditTrail::open(config_, Writer::kServer, gateway_.get()), std::runtime_error);
  EXPECT_FALSE(std::filesystem::exists(target));
  std::ofstream(target) << "untouched\n";
  std::filesystem::create_symlink(target, log_path(config_.audit, Writer::kTool));
  EXPECT_THROW(AuditTrail::open(config_, Writer::kTool, gateway_.get()), std::runtime_error);
  EXPECT_EQ(slurp(target), "untouched\n");
}

// Prefork servers share one config: {pid} gives each process its own file (and lock),
// while keysvcctl's runs keep sharing one. Other processes are not forked here (a child
// of this multi-threaded test that starts threads can hang under ASan and is stopped by
// TSan); nginx's real workers cover that: NginxWorkersEachWriteTheirOwnAuditLog.
TEST_F(AuditTrailTest, PidInThePathGivesEachProcessItsOwnFile) {
  config_.audit.path = dir_ + "/audit-{pid}.jsonl";
  const std::string pid = std::to_string(::getpid());
  const std::string mine = dir_ + "/audit-" + pid + ".jsonl";
  EXPECT_EQ(log_path(config_.audit, Writer::kServer), mine);
  EXPECT_EQ(log_path(config_.audit, Writer::kTool), dir_ + "/audit-keysvcctl.jsonl");
  Config twice = config_;
  twice.audit.path = dir_ + "/{pid}/audit-{pid}";
  EXPECT_EQ(log_path(twice.audit, Writer::kServer), dir_ + "/" + pid + "/audit-" + pid);

  auto server = AuditTrail::open(config_, Writer::kServer, gateway_.get());
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->path(), mine);
  // The same process again: the same file, still locked.
  try {
    AuditTrail::open(config_, Writer::kServer, gateway_.get());
    ADD_FAILURE() << "a second writer of this process's file must fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another process"), std::string::npos) << e.what();
  }
  auto tool = AuditTrail::open(config_, Writer::kTool, gateway_.get());
  EXPECT_EQ(tool->path(), dir_ + "/audit-keysvcctl.jsonl");
  tool->close();
  server->close();
  EXPECT_TRUE(verifies(mine));
  EXPECT_TRUE(verifies(dir_ + "/audit-keysvcctl.jsonl"));
}

TEST_F(AuditTrailTest, RingChangesBecomeLifecycleRecords) {
  auto trail = AuditTrail::open(config_, Writer::kServer, gateway_.get());
  auto load = [&] { return gateway_->call([](hsm::Session& s) { return token_store::load(s); }); };
  const std::int64_t now = 1'800'000'000;
  // The ring store's listener sees (previous ring, installed ring).
  KeyRing previous;
  auto installed = [&](std::int64_t at) {
    KeyRing ring = load();
    trail->ring_changed(previous, ring, at);
    previous = std::move(ring);
  };
  installed(now);  // the first ring: only noted
  Generation a = gateway_->call([&](hsm::Session& s) {
    return token_store::create_generation(s, schedule_encrypting_now(token_store::load(s), now, config_.rotation));
  });
  installed(now);
  Generation b = gateway_->call([&](hsm::Session& s) {
    return token_store::create_generation(s, schedule_encrypting_now(token_store::load(s), now, config_.rotation));
  });
  installed(now + 1);
  ASSERT_TRUE(revoke(*gateway_, b.name, now + 1, config_.rotation));  // b encrypted: a replacement is made
  installed(now + 2);
  gateway_->call([&](hsm::Session& s) { token_store::destroy_generation(s, a.name); });
  installed(now + 2);
  trail->close();

  std::string text = slurp(config_.audit.path);
  auto has = [&](const char* event, const KeyName& name) {
    return count(text, std::string("\"event\":\"") + event + "\",\"name\":\"" + to_hex(name) + "\"");
  };
  EXPECT_EQ(has("generation_created", a.name), 1u) << text;
  EXPECT_EQ(has("activated", a.name), 1u) << text;
  EXPECT_EQ(has("decrypt_only", a.name), 1u) << text;
  EXPECT_EQ(has("generation_created", b.name), 1u) << text;
  EXPECT_EQ(has("activated", b.name), 1u) << text;
  EXPECT_EQ(has("revoked", b.name), 1u) << text;
  EXPECT_EQ(has("decrypt_only", b.name), 0u) << "a revoked generation is not decrypt-only\n" << text;
  EXPECT_EQ(has("destroyed", a.name), 1u) << text;
  EXPECT_EQ(count(text, "\"event\":\"generation_created\""), 3u) << "a, b and b's replacement\n" << text;
  EXPECT_NE(text.find("\"never_extractable\":true"), std::string::npos);
  EXPECT_TRUE(verifies(config_.audit.path));
}

TEST_F(AuditTrailTest, HsmErrorsAreRateLimitedWithCounts) {
  auto trail = AuditTrail::open(config_, Writer::kServer, gateway_.get());
  for (int i = 0; i < 5; ++i) trail->hsm_errors("C_Sign", "CKR_DEVICE_ERROR");
  trail->hsm_errors("C_Sign", "CKR_DEVICE_REMOVED", 2);
  trail->close();  // writes what the rate limit held back
  std::string text = slurp(config_.audit.path);
  EXPECT_EQ(count(text, "\"event\":\"hsm_error\",\"operation\":\"C_Sign\",\"rv\":\"CKR_DEVICE_ERROR\",\"count\":1,"), 1u)
      << text;
  EXPECT_EQ(count(text, "\"event\":\"hsm_error\",\"operation\":\"C_Sign\",\"rv\":\"CKR_DEVICE_ERROR\",\"count\":4,"), 1u)
      << text;
  EXPECT_EQ(count(text, "\"rv\":\"CKR_DEVICE_REMOVED\",\"count\":2,"), 1u) << text;
  EXPECT_TRUE(verifies(config_.audit.path));
}

TEST_F(AuditTrailTest, FailedModuleCallsAreRecordedFromTheCallStatistics) {
  auto trail = AuditTrail::open(config_, Writer::kServer, gateway_.get());
  // A key handle that does not exist: C_SignInit fails in the module.
  EXPECT_THROW(gateway_->call([](hsm::Session& s) {
                 std::array<std::uint8_t, 4> data{};
                 std::array<std::uint8_t, hsm::kHmacSha256Bytes> mac{};
                 hsm::hmac_sha256(s, 0x7ffffff0, data, mac);
               }),
               hsm::Pkcs11Error);
  trail->close();
  std::string text = slurp(config_.audit.path);
  EXPECT_NE(text.find("\"event\":\"hsm_error\",\"operation\":\"C_SignInit\""), std::string::npos) << text;
}

TEST_F(AuditTrailTest, LoginFailureIsRecordedWithoutThePinAndSealedByTheNextWriter) {
  const std::string pin = test::TestToken::get().pin();
  record_login_failure(config_, Writer::kServer, "CKR_PIN_INCORRECT");
  std::string text = slurp(config_.audit.path);
  EXPECT_NE(text.find("\"event\":\"login_failed\",\"token\":\"pkcs11:token=keysvc-test\",\"rv\":\"CKR_PIN_INCORRECT\""),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("\"event\":\"seal\""), std::string::npos) << "no token, no seal";
  EXPECT_EQ(text.find(pin), std::string::npos);
  EXPECT_FALSE(verifies(config_.audit.path)) << "an unsealed tail";
  // The next writer with the token seals exactly what the token's pending mark names.
  AuditTrail::open(config_, Writer::kServer, gateway_.get())->close();
  EXPECT_TRUE(verifies(config_.audit.path));
  text = slurp(config_.audit.path);
  EXPECT_NE(text.find("\"unanchored\":{\"lines\":3,\"last_seq\":3,\"seals\":0,\"vouched\":3}"), std::string::npos)
      << text;
  EXPECT_TRUE(is_login_failure(CKR_PIN_INCORRECT));
  EXPECT_FALSE(is_login_failure(CKR_DEVICE_ERROR));
}

}  // namespace
}  // namespace keysvc::audit
