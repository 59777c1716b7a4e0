#include "keysvc/hsm/session_copy.h"

#include <gtest/gtest.h>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

using test::as_bytes;
using Mac = test::TokenMac;
using test::token_hmac;

CK_RV copy_rv(Session& s, CK_OBJECT_HANDLE key) {
  try {
    copy_to_session(s, key, "copy");
    return CKR_OK;
  } catch (const Pkcs11Error& e) {
    return e.rv();
  }
}

TEST(SessionCopy, CopyableKeyGivesSameMacFromEverySessionOfTheProcess) {
  test::TestToken::get().clear();
  auto holder = test::user_session();
  auto other = test::user_session();
  CK_OBJECT_HANDLE key = generate_hmac_key(*holder, as_bytes("c1"), "keysvc-ticket-enc", Copyable::kYes);
  CK_OBJECT_HANDLE copy = copy_to_session(*holder, key, "keysvc-session-copy");
  ASSERT_NE(copy, key);
  EXPECT_EQ(token_hmac(*other, copy, as_bytes("message")), token_hmac(*other, key, as_bytes("message")));
  EXPECT_NE(token_hmac(*other, copy, as_bytes("message")), token_hmac(*other, copy, as_bytes("other message")));
  // A session object, with its own label: a search for the token key by label finds one object.
  EXPECT_FALSE(get_bool_attribute(*holder, copy, CKA_TOKEN));
  EXPECT_EQ(find_objects(*other, {.object_class = CKO_SECRET_KEY, .label = std::string("keysvc-ticket-enc")}),
            std::vector<CK_OBJECT_HANDLE>{key});
  EXPECT_TRUE(object_exists(*other, copy));
}

TEST(SessionCopy, CopyKeepsCustodyAndCannotBeCopiedOrChanged) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  CK_OBJECT_HANDLE key = generate_hmac_key(*s, as_bytes("c2"), "k", Copyable::kYes);
  CK_OBJECT_HANDLE copy = copy_to_session(*s, key, "keysvc-session-copy");
  KeyCustody c = read_custody(*s, copy);
  EXPECT_TRUE(c.sensitive);
  EXPECT_TRUE(c.always_sensitive);
  EXPECT_FALSE(c.extractable);
  EXPECT_TRUE(c.never_extractable);
  EXPECT_TRUE(c.held_in_token());
  EXPECT_TRUE(c.sign);
  EXPECT_FALSE(c.verify || c.encrypt || c.decrypt || c.wrap || c.unwrap || c.derive);
  EXPECT_FALSE(c.modifiable);  // (CKA_COPYABLE is inherited: SoftHSM refuses it in a copy template)
  EXPECT_TRUE(get_bool_attribute(*s, copy, CKA_PRIVATE));
  try {
    get_attribute(*s, copy, CKA_VALUE);
    FAIL() << "the copy's CKA_VALUE was readable";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_ATTRIBUTE_SENSITIVE));
  }
  // The copy cannot be changed, so it can never be turned into a token object.
  EXPECT_TRUE(copy_refused(copy_rv(*s, copy)));
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE to_token{CKA_TOKEN, &yes, 1};
  CK_OBJECT_HANDLE out = CK_INVALID_HANDLE;
  EXPECT_NE(s->fn()->C_CopyObject(s->handle(), copy, &to_token, 1, &out), static_cast<CK_RV>(CKR_OK));
  CK_ATTRIBUTE derive{CKA_DERIVE, &yes, 1};
  EXPECT_NE(s->fn()->C_SetAttributeValue(s->handle(), copy, &derive, 1), static_cast<CK_RV>(CKR_OK));
  // The source's custody is unchanged except for the opt-in pair.
  KeyCustody src = read_custody(*s, key);
  EXPECT_TRUE(src.held_in_token());
  EXPECT_TRUE(src.copyable);
  EXPECT_TRUE(src.modifiable);
  EXPECT_FALSE(src.derive || src.wrap || src.encrypt);
}

TEST(SessionCopy, NonCopyableKeyIsRefused) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  CK_OBJECT_HANDLE key = generate_hmac_key(*s, as_bytes("c3"), "k");  // the default
  CK_RV rv = copy_rv(*s, key);
  EXPECT_NE(rv, static_cast<CK_RV>(CKR_OK));
  EXPECT_TRUE(copy_refused(rv)) << rv;
}

TEST(SessionCopy, CopyDiesWithItsSessionButNotWithOthers) {
  test::TestToken::get().clear();
  auto keeper = test::user_session();  // keeps the token's object handles alive
  CK_OBJECT_HANDLE key = generate_hmac_key(*keeper, as_bytes("c4"), "k", Copyable::kYes);
  CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
  {
    auto holder = test::user_session();
    copy = copy_to_session(*holder, key, "keysvc-session-copy");
    EXPECT_TRUE(object_exists(*keeper, copy));
  }
  EXPECT_FALSE(object_exists(*keeper, copy));
  try {
    token_hmac(*keeper, copy, as_bytes("m"));
    FAIL() << "signed with the copy of a closed session";
  } catch (const Pkcs11Error& e) {
    EXPECT_TRUE(e.rv() == CKR_KEY_HANDLE_INVALID || e.rv() == CKR_OBJECT_HANDLE_INVALID) << e.what();
  }
  EXPECT_TRUE(object_exists(*keeper, key));
}

TEST(SessionCopy, CopyOutlivesTheDestroyedTokenKeyUntilDestroyed) {
  // Why keysvc drops copies itself when a generation leaves the ring.
  test::TestToken::get().clear();
  auto s = test::user_session();
  CK_OBJECT_HANDLE key = generate_hmac_key(*s, as_bytes("c5"), "k", Copyable::kYes);
  CK_OBJECT_HANDLE copy = copy_to_session(*s, key, "keysvc-session-copy");
  Mac before = token_hmac(*s, copy, as_bytes("m"));
  destroy_object(*s, key);
  EXPECT_EQ(token_hmac(*s, copy, as_bytes("m")), before);
  destroy_object(*s, copy);
  EXPECT_FALSE(object_exists(*s, copy));
}

}  // namespace
}  // namespace keysvc::hsm
