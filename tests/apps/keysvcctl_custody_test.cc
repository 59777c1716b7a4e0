// keysvcctl and a generation planted in the token with known key values (key_custody.h):
// `keys list` shows it as refused with the reason, `rotate` does not count it as cover
// and makes keysvc's own generation, which is the one that encrypts.
#include <gtest/gtest.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/token_store.h"
#include "process.h"
#include "test_helpers.h"
#include "tls_server_process.h"

namespace keysvc {
namespace {

using Json = nlohmann::json;

test::RunResult ctl(std::vector<std::string> args) {
  args.insert(args.begin(), {KEYSVCCTL_PATH, "--config", test::TestToken::get().config_path()});
  return test::run(args, "", std::chrono::seconds(60));
}

TEST(KeysvcctlCustody, PlantedGenerationIsListedAsRefusedAndNeverEncrypts) {
  test::TestToken::get().clear();
  KeyName planted{};
  {
    auto s = test::user_session();
    auto r = test::random_bytes(planted.size());
    std::copy(r.begin(), r.end(), planted.begin());
    const hsm::Bytes id(planted.begin(), planted.end());
    hsm::import_hmac_key(*s, id, token_store::kEncKeyLabel, test::random_bytes(32));
    hsm::import_hmac_key(*s, id, token_store::kMacKeyLabel, test::random_bytes(32));
    const std::int64_t now = std::time(nullptr);
    const std::string record = "keysvc-generation v1\ncreated=" + std::to_string(now) + "\nencrypt_from=" +
                               std::to_string(now) + "\nencrypt_until=" + std::to_string(now + 3600) +
                               "\ndecrypt_until=" + std::to_string(now + 7200) + "\n";
    hsm::create_data_object(*s, token_store::kApplication, token_store::kRecordLabelPrefix + to_hex(planted),
                            test::as_bytes(record));
  }
  auto rotate = ctl({"rotate", "--json"});
  ASSERT_EQ(rotate.exit_code, std::optional<int>(0)) << test::describe(rotate);

  auto list = ctl({"keys", "list", "--json"});
  ASSERT_EQ(list.exit_code, std::optional<int>(0)) << test::describe(list);
  Json v = Json::parse(list.out);
  int refused = 0, active = 0;
  for (const Json& g : v) {
    if (g.at("name").get<std::string>() == to_hex(planted)) {
      ++refused;
      EXPECT_EQ(g.at("state").get<std::string>(), "refused");
      EXPECT_NE(g.at("refused").get<std::string>().find("CKA_ALWAYS_SENSITIVE"), std::string::npos) << g.dump();
    } else {
      EXPECT_TRUE(g.at("refused").is_null()) << g.dump();
      active += g.at("active").get<bool>() ? 1 : 0;
    }
  }
  EXPECT_EQ(refused, 1) << list.out;
  EXPECT_EQ(active, 1) << "rotate made keysvc's own generation, which encrypts\n" << list.out;

  auto text = ctl({"keys", "list"});
  ASSERT_EQ(text.exit_code, std::optional<int>(0)) << test::describe(text);
  EXPECT_NE(text.out.find("REFUSED, never used"), std::string::npos) << text.out;
}

}  // namespace
}  // namespace keysvc
