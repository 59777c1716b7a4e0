#include "keysvc/token_store.h"

#include <gtest/gtest.h>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/session_pool.h"
#include "pty_run.h"
#include "test_helpers.h"

namespace keysvc {
namespace {

using test::ByteVec;

const Schedule kSchedule{1000, 1100, 4700, 11900};

std::string text(const hsm::Bytes& b) { return std::string(b.begin(), b.end()); }
ByteVec id_of(const KeyName& n) { return ByteVec(n.begin(), n.end()); }

void create_record(hsm::Session& s, const std::string& label, const std::string& value) {
  hsm::create_data_object(s, token_store::kApplication, label, test::as_bytes(value));
}

TEST(TokenStore, CreateWritesThreeObjectsAndLoadReadsThem) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation g = token_store::create_generation(*s, kSchedule);
  EXPECT_EQ(g.schedule, kSchedule);
  ASSERT_TRUE(g.has_keys());
  EXPECT_EQ(hsm::find_objects(*s, {}).size(), 3u) << "exactly three objects per generation";

  auto keys = hsm::find_objects(*s, {.object_class = CKO_SECRET_KEY, .id = id_of(g.name)});
  EXPECT_EQ(keys.size(), 2u);
  EXPECT_EQ(text(hsm::get_attribute(*s, g.enc_key, CKA_LABEL)), "keysvc-ticket-enc");
  EXPECT_EQ(text(hsm::get_attribute(*s, g.mac_key, CKA_LABEL)), "keysvc-ticket-mac");
  EXPECT_EQ(hsm::get_attribute(*s, g.enc_key, CKA_ID), id_of(g.name));

  auto records = hsm::find_objects(*s, {.object_class = CKO_DATA, .application = std::string("keysvc")});
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(text(hsm::get_attribute(*s, records[0], CKA_LABEL)), "keysvc-generation " + to_hex(g.name));
  EXPECT_EQ(text(hsm::get_attribute(*s, records[0], CKA_VALUE)),
            "keysvc-generation v1\ncreated=1000\nencrypt_from=1100\nencrypt_until=4700\ndecrypt_until=11900\n");
  EXPECT_TRUE(hsm::get_bool_attribute(*s, records[0], CKA_PRIVATE));

  KeyRing ring = token_store::load(*s);
  ASSERT_EQ(ring.generations().size(), 1u);
  const Generation& loaded = ring.generations()[0];
  EXPECT_EQ(loaded.name, g.name);
  EXPECT_EQ(loaded.enc_key, g.enc_key);
  EXPECT_EQ(loaded.mac_key, g.mac_key);
  EXPECT_EQ(loaded.schedule, kSchedule);
  EXPECT_FALSE(loaded.revoked);

  auto custody = token_store::read_custody(*s, loaded);
  EXPECT_TRUE(custody.enc.held_in_token());
  EXPECT_TRUE(custody.mac.held_in_token());
  EXPECT_TRUE(custody.enc.sign && !custody.enc.verify && !custody.enc.derive);
}

TEST(TokenStore, DerivationTwoWritesOneKeyAndAV2Record) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation g = token_store::create_generation(*s, kSchedule, {hsm::Copyable::kYes, 2});
  EXPECT_EQ(g.derivation, 2);
  EXPECT_EQ(g.enc_key, g.mac_key);
  EXPECT_EQ(hsm::find_objects(*s, {}).size(), 2u) << "one key and one record";
  EXPECT_EQ(text(hsm::get_attribute(*s, g.enc_key, CKA_LABEL)), "keysvc-ticket-key");
  CK_ULONG len = 0;
  CK_ATTRIBUTE a{CKA_VALUE_LEN, &len, sizeof len};
  ASSERT_EQ(s->fn()->C_GetAttributeValue(s->handle(), g.enc_key, &a, 1), static_cast<CK_RV>(CKR_OK));
  EXPECT_EQ(len, hsm::kHmacSha512KeyBytes);
  auto custody = token_store::read_custody(*s, g);
  EXPECT_TRUE(custody.enc.held_in_token());
  EXPECT_TRUE(custody.enc.copyable);
  auto records = hsm::find_objects(*s, {.object_class = CKO_DATA, .application = std::string("keysvc")});
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(text(hsm::get_attribute(*s, records[0], CKA_VALUE)).starts_with("keysvc-generation v2\n"));

  // A v1 generation next to it: both load, each with its own derivation.
  Generation v1 = token_store::create_generation(*s, kSchedule);
  KeyRing ring = token_store::load(*s);
  ASSERT_EQ(ring.generations().size(), 2u);
  ASSERT_NE(ring.find(g.name), nullptr);
  EXPECT_EQ(ring.find(g.name)->derivation, 2);
  EXPECT_EQ(ring.find(g.name)->enc_key, g.enc_key);
  EXPECT_EQ(ring.find(g.name)->mac_key, g.enc_key);
  EXPECT_EQ(ring.find(g.name)->schedule, kSchedule);
  EXPECT_EQ(ring.find(v1.name)->derivation, 1);

  token_store::destroy_generation(*s, g.name);
  EXPECT_EQ(hsm::find_objects(*s, {.id = id_of(g.name)}).size(), 0u);
  EXPECT_EQ(token_store::load(*s).generations().size(), 1u);
  EXPECT_THROW(token_store::create_generation(*s, kSchedule, {hsm::Copyable::kNo, 3}), hsm::Error);
}

TEST(TokenStore, NamesAreRandomAndKeysDiffer) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation a = token_store::create_generation(*s, kSchedule);
  Generation b = token_store::create_generation(*s, kSchedule);
  EXPECT_NE(a.name, b.name);
  std::array<std::uint8_t, 32> ma{}, mb{}, me{};
  hsm::hmac_sha256(*s, a.mac_key, test::as_bytes("x"), ma);
  hsm::hmac_sha256(*s, b.mac_key, test::as_bytes("x"), mb);
  hsm::hmac_sha256(*s, a.enc_key, test::as_bytes("x"), me);
  EXPECT_NE(ma, mb);
  EXPECT_NE(ma, me) << "enc and mac keys are distinct keys";
}

TEST(TokenStore, DestroyRemovesOneGenerationOnly) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation a = token_store::create_generation(*s, kSchedule);
  Generation b = token_store::create_generation(*s, Schedule{2000, 4700, 8300, 15500});
  ASSERT_EQ(token_store::load(*s).generations().size(), 2u);
  token_store::destroy_generation(*s, a.name);
  EXPECT_TRUE(hsm::find_objects(*s, {.id = id_of(a.name)}).empty());
  EXPECT_TRUE(hsm::find_objects(*s, {.label = "keysvc-generation " + to_hex(a.name)}).empty());
  KeyRing ring = token_store::load(*s);
  ASSERT_EQ(ring.generations().size(), 1u);
  EXPECT_EQ(ring.generations()[0].name, b.name);
  EXPECT_EQ(hsm::find_objects(*s, {}).size(), 3u);
  // Destroying what is not there is fine.
  EXPECT_NO_THROW(token_store::destroy_generation(*s, a.name));
  EXPECT_NO_THROW(token_store::destroy_generation(*s, KeyName{}));
  EXPECT_EQ(hsm::find_objects(*s, {}).size(), 3u);
}

TEST(TokenStore, KeysWithoutARecordAreIgnored) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  auto name = test::random_bytes(16);
  hsm::generate_hmac_key(*s, name, token_store::kEncKeyLabel);
  hsm::generate_hmac_key(*s, name, token_store::kMacKeyLabel);
  EXPECT_TRUE(token_store::load(*s).empty());
}

TEST(TokenStore, IncompleteOrForeignRecordsAreIgnored) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  const std::string good = "keysvc-generation v1\ncreated=1\nencrypt_from=2\nencrypt_until=3\ndecrypt_until=4\n";
  // A record whose mac key is missing.
  auto n1 = test::random_bytes(16);
  hsm::generate_hmac_key(*s, n1, token_store::kEncKeyLabel);
  create_record(*s, "keysvc-generation " + test::hex(n1), good);
  // Records with complete keys but a value this version does not understand.
  auto with_keys = [&](const std::string& value, std::string label = "") {
    auto n = test::random_bytes(16);
    hsm::generate_hmac_key(*s, n, token_store::kEncKeyLabel);
    hsm::generate_hmac_key(*s, n, token_store::kMacKeyLabel);
    create_record(*s, label.empty() ? "keysvc-generation " + test::hex(n) : label, value);
  };
  with_keys("keysvc-generation v2\ncreated=1\nencrypt_from=2\nencrypt_until=3\ndecrypt_until=4\n");
  with_keys("keysvc-generation v1\ncreated=1\nencrypt_from=2\n");                                  // fields missing
  with_keys("keysvc-generation v1\ncreated=1\nencrypt_from=5\nencrypt_until=3\ndecrypt_until=4\n");  // inconsistent
  with_keys("keysvc-generation v1\ncreated=x\nencrypt_from=2\nencrypt_until=3\ndecrypt_until=4\n");  // not a number
  with_keys(good, "keysvc-generation not-hex");
  with_keys(good, "other-label");
  EXPECT_TRUE(token_store::load(*s).empty());

  // Control: the same value with a proper label and both keys loads.
  with_keys(good);
  EXPECT_EQ(token_store::load(*s).generations().size(), 1u);
}

TEST(TokenStore, RevocationRecords) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation g = token_store::create_generation(*s, kSchedule);
  token_store::write_revocation(*s, g.name, 3000, 20000);
  KeyRing ring = token_store::load(*s);
  ASSERT_EQ(ring.generations().size(), 1u);
  EXPECT_TRUE(ring.generations()[0].revoked);
  EXPECT_EQ(ring.generations()[0].revoked_at, 3000);
  EXPECT_EQ(ring.generations()[0].schedule, kSchedule) << "keys still there: schedule from the generation record";
  EXPECT_FALSE(ring.generations()[0].usable());

  // Keys gone, revocation record kept: the name is still known as revoked.
  token_store::destroy_generation(*s, g.name);
  ring = token_store::load(*s);
  ASSERT_EQ(ring.generations().size(), 1u);
  EXPECT_TRUE(ring.generations()[0].revoked);
  EXPECT_FALSE(ring.generations()[0].has_keys());
  EXPECT_EQ(ring.generations()[0].schedule.decrypt_until, 20000);

  EXPECT_EQ(ring.generations()[0].schedule.created, 3000) << "a record without the schedule: the revocation's time";

  token_store::drop_revocation(*s, g.name);
  EXPECT_TRUE(token_store::load(*s).empty());
  EXPECT_TRUE(hsm::find_objects(*s, {}).empty());

  // A record that keeps the schedule: once the keys are gone, keys list still shows when
  // the generation was created and encrypted; its encrypt window ends at the revocation.
  Generation h = token_store::create_generation(*s, kSchedule);
  token_store::write_revocation(*s, h.name, 3000, 20000, kSchedule);
  token_store::destroy_generation(*s, h.name);
  ring = token_store::load(*s);
  ASSERT_EQ(ring.generations().size(), 1u);
  EXPECT_EQ(ring.generations()[0].schedule, (Schedule{kSchedule.created, kSchedule.encrypt_from, 3000, 20000}));
  EXPECT_EQ(ring.generations()[0].revoked_at, 3000);
}

// A session logged out behind keysvc's back (login state is per application) would
// search as the public user and see no generation at all: load refuses it with an
// error that kills the session, so the pool logs in on a fresh one and loads the ring.
TEST(TokenStore, LoadRefusesALoggedOutSessionAndThePoolRecovers) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation g = token_store::create_generation(*s, kSchedule);
  ASSERT_EQ(s->fn()->C_Logout(s->handle()), static_cast<CK_RV>(CKR_OK));
  try {
    token_store::load(*s);
    FAIL() << "loaded a ring from a logged-out session";
  } catch (const hsm::Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_USER_NOT_LOGGED_IN));
    EXPECT_TRUE(e.session_is_dead());
  }
  hsm::SessionPool pool(test::test_hsm_token(), hsm::PinSource::parse("file:" + test::TestToken::get().pin_path()), 1);
  {
    auto lease = pool.lease();  // logs in (the user is logged out), then log out again
    ASSERT_EQ(lease->fn()->C_Logout(lease->handle()), static_cast<CK_RV>(CKR_OK));
  }
  KeyRing ring = pool.run([](hsm::Session& session) { return token_store::load(session); });
  ASSERT_EQ(ring.generations().size(), 1u);
  EXPECT_EQ(ring.generations()[0].name, g.name);
}

// The keys of a real generation cannot be read by pkcs11-tool logged in as the user,
// although the same harness lists them.
TEST(TokenStore, Pkcs11ToolCannotReadGenerationKeys) {
  auto& t = test::TestToken::get();
  t.clear();
  Generation g;
  {
    auto s = test::user_session();
    g = token_store::create_generation(*s, kSchedule);
  }
  std::vector<std::string> base = {"pkcs11-tool", "--module", test::kSoftHsmModule, "--login"};
  auto list_args = base;
  list_args.push_back("--list-objects");
  auto listed = test::run_under_pty(list_args, t.pin());
  ASSERT_FALSE(listed.timed_out) << listed.output;
  EXPECT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_NE(listed.output.find(to_hex(g.name)), std::string::npos) << listed.output;

  for (const char* label : {token_store::kEncKeyLabel, token_store::kMacKeyLabel}) {
    auto args = base;
    for (const char* a : {"--read-object", "--type", "secrkey", "--id"}) args.push_back(a);
    args.push_back(to_hex(g.name));
    args.push_back("--label");
    args.push_back(label);
    auto r = test::run_under_pty(args, t.pin());
    ASSERT_FALSE(r.timed_out) << r.output;
    EXPECT_TRUE(r.pin_prompted) << r.output;
    EXPECT_NE(r.exit_code, 0) << label << ": " << r.output;
    EXPECT_EQ(r.output.find(t.pin()), std::string::npos);
  }
}

}  // namespace
}  // namespace keysvc
