// keysvcctl keys (generate, list, revoke, destroy) and status, run as subprocesses
// against the test process's own SoftHSM token (TestToken): the schedule, states and
// custody they show, what revoke and destroy take away, and the names they accept.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "keysvc/hsm/object.h"
#include "keysvc/key_name.h"
#include "keysvcctl_runner.h"
#include "process.h"
#include "test_token.h"

namespace {

using keysvc::test::TestToken;
using keysvc::test::count_lines;
using namespace keysvc::test::keysvcctl;

void expect_held_in_token(const Json& key) {
  EXPECT_TRUE(key.at("sensitive").get<bool>());
  EXPECT_TRUE(key.at("always_sensitive").get<bool>());
  EXPECT_FALSE(key.at("extractable").get<bool>());
  EXPECT_TRUE(key.at("never_extractable").get<bool>());
  EXPECT_TRUE(key.at("sign").get<bool>());
  for (const char* off : {"verify", "encrypt", "decrypt", "wrap", "unwrap", "derive", "copyable", "modifiable"})
    EXPECT_FALSE(key.at(off).get<bool>()) << off;
  EXPECT_TRUE(key.at("held_in_token").get<bool>());
}

const Json* find_generation(const Json& list, const std::string& name) {
  for (const auto& g : list)
    if (g.at("name").get<std::string>() == name) return &g;
  return nullptr;
}

// The secret keys in the token whose CKA_ID is the generation `name` (hex).
std::size_t keys_in_token(const std::string& name) {
  auto id = keysvc::key_name_from_hex(name);
  if (!id) throw std::runtime_error("bad name " + name);
  auto pool = keysvc::test::open_pool(TestToken::get().config());
  return pool->run([&](keysvc::hsm::Session& s) {
    return keysvc::hsm::find_objects(s, {.object_class = CKO_SECRET_KEY, .id = keysvc::hsm::Bytes(id->begin(), id->end())})
        .size();
  });
}

std::string iso_shape() { return "2024-01-01T00:00:00Z"; }

TEST(Keysvcctl, KeysGenerateThenListShowsScheduleAndCustody) {
  TestToken::get().clear();
  Result gen = ctl_config({"keys", "generate"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  ASSERT_EQ(count_lines(gen.out), 1u) << gen.out;
  std::string name = gen.out.substr(0, gen.out.size() - 1);
  EXPECT_TRUE(is_key_name(name)) << name;

  Json v = list_json(TestToken::get().config_path());
  ASSERT_TRUE(v.is_array());
  ASSERT_EQ(v.size(), 1u);
  const Json& g = v[0];
  EXPECT_EQ(g.at("name").get<std::string>(), name);
  EXPECT_EQ(g.at("state").get<std::string>(), "active");
  EXPECT_TRUE(g.at("active").get<bool>());
  for (const char* t : {"created", "encrypt_from", "encrypt_until", "decrypt_until"}) {
    EXPECT_EQ(g.at(t).get<std::string>().size(), iso_shape().size()) << t << " " << g.at(t).get<std::string>();
    EXPECT_EQ(g.at(t).get<std::string>().back(), 'Z') << t;
    EXPECT_TRUE(g[std::string(t) + "_unix"].is_number()) << t;
  }
  // Default [rotation]: one encrypt_period (1h), then decrypt_window (tickets.lifetime, 2h).
  EXPECT_EQ(as_int(g.at("encrypt_from_unix")), as_int(g.at("created_unix")));
  EXPECT_EQ(as_int(g.at("encrypt_until_unix")) - as_int(g.at("encrypt_from_unix")), 3600);
  EXPECT_EQ(as_int(g.at("decrypt_until_unix")) - as_int(g.at("encrypt_until_unix")), 7200);
  EXPECT_FALSE(g.at("revoked").get<bool>());
  EXPECT_TRUE(g.at("has_keys").get<bool>());
  expect_held_in_token(g.at("enc_key"));
  expect_held_in_token(g.at("mac_key"));
  // The default tier: one root key from which the token derives a key per 5-minute epoch.
  EXPECT_EQ(g.at("tier").get<std::string>(), "epoch");
  EXPECT_EQ(g.at("derivation").get<int>(), 3);
  EXPECT_EQ(g.at("epoch_seconds").get<int>(), 300);

  // A second generation starts at least a second after the first, and then encrypts;
  // the first is decrypt-only.
  Result gen2 = ctl_config({"keys", "generate", "--json"});
  ASSERT_EQ(gen2.exit_code, 0) << gen2.err;
  Json g2 = parse_json(gen2.out);
  std::string name2 = g2.at("name").get<std::string>();
  EXPECT_TRUE(is_key_name(name2));
  EXPECT_GE(as_int(g2.at("encrypt_from_unix")), as_int(g.at("encrypt_from_unix")) + 1);
  sleep_until_unix(as_int(g2.at("encrypt_from_unix")));
  Json v2 = list_json(TestToken::get().config_path());
  ASSERT_EQ(v2.size(), 2u);
  EXPECT_EQ(v2[0].at("name").get<std::string>(), name2);  // latest encrypt window first
  for (const auto& e : v2) {
    EXPECT_EQ(e.at("state").get<std::string>(), e.at("name").get<std::string>() == name2 ? "active" : "decrypt-only");
  }

  // Human output: a header and one aligned row per generation.
  Result text = ctl_config({"keys", "list"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(count_lines(text.out), 3u) << text.out;
  for (const std::string& word : {std::string("NAME"), std::string("STATE"), std::string("TIER"),
                                  std::string("epoch 300s"), std::string("ENCRYPT_FROM"),
                                  std::string("DECRYPT_UNTIL"), name, name2, std::string("decrypt-only"),
                                  std::string("active"), std::string("sensitive, never-extractable")})
    EXPECT_NE(text.out.find(word), std::string::npos) << word << "\n" << text.out;
}

TEST(Keysvcctl, ReadOnlyCommandsOnEmptyTokenCreateNothing) {
  TestToken::get().clear();
  const std::string config = fast_config();  // a rotating config: still nothing is created
  Result text = ctl_with(config, {"keys", "list"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, "");
  Result json = ctl_with(config, {"keys", "list", "--json"});
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out, "[]\n");
  Json s = status_json(config);
  EXPECT_EQ(s.at("generations").get<std::int64_t>(), 0);
  EXPECT_TRUE(s.at("encrypt_generation").is_null());
  EXPECT_TRUE(s.at("next_generation").is_null());
  for (const char* state : {"pending", "active", "decrypt-only", "expired", "revoked"})
    EXPECT_EQ(s.at("states").at(state).get<std::int64_t>(), 0) << state;
  Result st = ctl_with(config, {"status"});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(list_json(config).size(), 0u);
}

TEST(Keysvcctl, StatusJson) {
  TestToken::get().clear();
  ASSERT_EQ(ctl_config({"keys", "generate"}).exit_code, 0);
  Result gen = ctl_config({"keys", "generate", "--json"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  Json newest = parse_json(gen.out);
  sleep_until_unix(as_int(newest.at("encrypt_from_unix")));

  Json s = status_json(TestToken::get().config_path());
  EXPECT_EQ(s.at("module").get<std::string>(), keysvc::test::kSoftHsmModule);
  EXPECT_EQ(s.at("token").at("label").get<std::string>(), "keysvc-test");
  EXPECT_FALSE(s.at("token").at("serial").get<std::string>().empty());
  EXPECT_EQ(s.at("token").at("model").get<std::string>(), "SoftHSM v2");
  EXPECT_TRUE(s.at("login").get<bool>());
  EXPECT_EQ(s.at("generations").get<std::int64_t>(), 2);
  EXPECT_EQ(s.at("states").at("active").get<std::int64_t>(), 1);
  EXPECT_EQ(s.at("states").at("decrypt-only").get<std::int64_t>(), 1);
  EXPECT_EQ(s.at("encrypt_generation").get<std::string>(), newest.at("name").get<std::string>());
  EXPECT_EQ(s.at("encrypt_from_unix").get<std::int64_t>(), newest.at("encrypt_from_unix").get<std::int64_t>());
  EXPECT_TRUE(s.at("next_generation").is_null());
  EXPECT_EQ(s.at("covered_until_unix").get<std::int64_t>(), newest.at("encrypt_until_unix").get<std::int64_t>());
  EXPECT_EQ(s.at("now").get<std::string>().size(), iso_shape().size());

  Result text = ctl_config({"status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("keysvc-test"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(newest.at("name").get<std::string>()), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("1 active, 1 decrypt-only"), std::string::npos) << text.out;
}

TEST(Keysvcctl, KeysListShowsPendingActiveAndDecryptOnly) {
  TestToken::get().clear();
  const std::string config = fast_config();
  Result rot = ctl_with(config, {"rotate", "--json"});
  Json r = json_of(rot);
  ASSERT_EQ(r.at("created").size(), 4u) << rot.out;  // [now, now+40s) in 10 s windows
  EXPECT_EQ(r.at("destroyed").size(), 0u);
  const std::string first = r.at("created")[0].at("name").get<std::string>();
  for (std::size_t k = 1; k < 4; ++k)
    EXPECT_EQ(r.at("created")[k].at("encrypt_from_unix").get<std::int64_t>(),
              r.at("created")[k - 1].at("encrypt_until_unix").get<std::int64_t>());

  // keys generate takes over from the rotator's current generation, which becomes
  // decrypt-only; the rotator's later windows stay pending.
  Json gen = json_of(ctl_with(config, {"keys", "generate", "--json"}));
  sleep_until_unix(as_int(gen.at("encrypt_from_unix")));
  Json list = list_json(config);
  ASSERT_EQ(list.size(), 5u) << list.size();
  std::map<std::string, int> states;
  for (const auto& g : list) {
    ++states[g.at("state").get<std::string>()];
    expect_held_in_token(g.at("enc_key"));
  }
  EXPECT_EQ(states.at("pending"), 3);
  EXPECT_EQ(states.at("active"), 1);
  EXPECT_EQ(states.at("decrypt-only"), 1);
  EXPECT_EQ((*find_generation(list, gen.at("name").get<std::string>())).at("state").get<std::string>(), "active");
  EXPECT_EQ((*find_generation(list, first)).at("state").get<std::string>(), "decrypt-only");
  EXPECT_EQ(list.front().at("state").get<std::string>(), "pending");

  Json s = status_json(config);
  EXPECT_EQ(s.at("encrypt_generation").get<std::string>(), gen.at("name").get<std::string>());
  EXPECT_EQ(s.at("next_generation").get<std::string>(), r.at("created")[1].at("name").get<std::string>());
  EXPECT_EQ(s.at("next_encrypt_from_unix").get<std::int64_t>(),
            r.at("created")[1].at("encrypt_from_unix").get<std::int64_t>());
  EXPECT_EQ(s.at("states").at("pending").get<std::int64_t>(), 3);

  Result text = ctl_with(config, {"keys", "list"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(count_lines(text.out), 6u) << text.out;
  for (const char* state : {"pending", "active", "decrypt-only"})
    EXPECT_NE(text.out.find(state), std::string::npos) << state << "\n" << text.out;
}

TEST(Keysvcctl, RevokeActiveGenerationReplacesIt) {
  TestToken::get().clear();
  const std::string config = calm_config();
  ASSERT_EQ(ctl_with(config, {"rotate"}).exit_code, 0);
  const std::string active = status_json(config).at("encrypt_generation").get<std::string>();
  ASSERT_TRUE(is_key_name(active));
  ASSERT_EQ(keys_in_token(active), 1u);  // the epoch tier's root key

  Result r = ctl_with(config, {"keys", "revoke", active});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("revoked " + active), std::string::npos) << r.out;

  Json list = list_json(config);
  ASSERT_EQ(list.size(), 2u);
  const Json* revoked = find_generation(list, active);
  ASSERT_NE(revoked, nullptr);
  EXPECT_EQ((*revoked).at("state").get<std::string>(), "revoked");
  EXPECT_TRUE((*revoked).at("revoked").get<bool>());
  EXPECT_EQ((*revoked).at("revoked_at").get<std::string>().size(), iso_shape().size());
  EXPECT_FALSE((*revoked).at("has_keys").get<bool>());
  EXPECT_TRUE((*revoked).at("enc_key").is_null());
  EXPECT_EQ(keys_in_token(active), 0u);  // the keys are gone from the token

  Json s = status_json(config);
  ASSERT_TRUE(s.at("encrypt_generation").is_string());
  const std::string replacement = s.at("encrypt_generation").get<std::string>();
  EXPECT_NE(replacement, active);
  EXPECT_EQ((*find_generation(list, replacement)).at("state").get<std::string>(), "active");
  EXPECT_EQ(s.at("states").at("revoked").get<std::int64_t>(), 1);
  EXPECT_NE(r.out.find("encrypting under " + replacement), std::string::npos) << r.out;

  Result text = ctl_with(config, {"keys", "list"});
  EXPECT_NE(text.out.find("keys destroyed"), std::string::npos) << text.out;

  // Revoking a generation that does not encrypt creates nothing.
  Json gen = json_of(ctl_with(config, {"keys", "generate", "--json"}));
  sleep_until_unix(as_int(gen.at("encrypt_from_unix")));
  Json rj = json_of(ctl_with(config, {"keys", "revoke", "--json", replacement}));
  EXPECT_EQ(rj.at("revoked").get<std::string>(), replacement);
  EXPECT_FALSE(rj.at("was_active").get<bool>());
  EXPECT_EQ(rj.at("encrypt_generation").get<std::string>(), gen.at("name").get<std::string>());
  EXPECT_EQ(list_json(config).size(), 3u);
}

TEST(Keysvcctl, DestroyRemovesGenerationOrRevocation) {
  TestToken::get().clear();
  const std::string config = calm_config();
  std::string a = json_of(ctl_with(config, {"keys", "generate", "--json"})).at("name").get<std::string>();
  Json b = json_of(ctl_with(config, {"keys", "generate", "--json"}));
  sleep_until_unix(as_int(b.at("encrypt_from_unix")));

  Result r = ctl_with(config, {"keys", "destroy", a});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "destroyed " + a + "\n");
  EXPECT_EQ(keys_in_token(a), 0u);
  Json list = list_json(config);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].at("name").get<std::string>(), b.at("name").get<std::string>());

  // Again: unknown now.
  Result again = ctl_with(config, {"keys", "destroy", a});
  EXPECT_EQ(again.exit_code, 1);
  expect_one_error_line(again);

  // A revoked generation's record goes too.
  ASSERT_EQ(ctl_with(config, {"keys", "revoke", b.at("name").get<std::string>()}).exit_code, 0);
  ASSERT_NE(find_generation(list_json(config), b.at("name").get<std::string>()), nullptr);
  Json d = json_of(ctl_with(config, {"keys", "destroy", "--json", b.at("name").get<std::string>()}));
  EXPECT_EQ(d.at("destroyed").get<std::string>(), b.at("name").get<std::string>());
  EXPECT_EQ(find_generation(list_json(config), b.at("name").get<std::string>()), nullptr);
}

TEST(Keysvcctl, RevokeAndDestroyCheckTheName) {
  TestToken::get().clear();
  const std::string config = calm_config();
  ASSERT_EQ(ctl_with(config, {"rotate"}).exit_code, 0);
  for (const char* verb : {"revoke", "destroy"}) {
    for (const std::string& bad : {std::string("xyz"), std::string(31, 'a'), std::string(33, 'a'),
                                   std::string(32, 'g'), std::string("0x") + std::string(30, '0')}) {
      Result r = ctl_with(config, {"keys", verb, bad});
      EXPECT_EQ(r.exit_code, 2) << verb << " " << bad << ": " << r.err;
      expect_one_error_line(r);
    }
    Result missing = ctl_with(config, {"keys", verb});
    EXPECT_EQ(missing.exit_code, 2) << missing.err;
    expect_one_error_line(missing);

    Result unknown = ctl_with(config, {"keys", verb, std::string(32, '0')});
    EXPECT_EQ(unknown.exit_code, 1) << unknown.err;
    expect_one_error_line(unknown);
    EXPECT_NE(unknown.err.find(std::string(32, '0')), std::string::npos) << unknown.err;
  }
  // Upper case names are accepted.
  std::string name = status_json(config).at("encrypt_generation").get<std::string>();
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Result r = ctl_with(config, {"keys", "revoke", upper});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(name), std::string::npos) << r.out;
  EXPECT_EQ(list_json(config).size(), 2u);  // the revoked one and its replacement
}

}  // namespace
