#include "keysvc/hsm/object.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/secret_key.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

using test::as_bytes;

Bytes bytes_of(std::string_view s) { return Bytes(s.begin(), s.end()); }

TEST(Object, CreateFindReadDestroyDataObject) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  std::string label = "record " + test::random_text(8);
  Bytes value = bytes_of("some metadata\n");
  CK_OBJECT_HANDLE h = create_data_object(*s, "keysvc-test-app", label, value);
  ASSERT_NE(h, static_cast<CK_OBJECT_HANDLE>(CK_INVALID_HANDLE));

  auto found = find_objects(*s, {.object_class = CKO_DATA, .label = label, .application = "keysvc-test-app"});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found.front(), h);

  EXPECT_EQ(get_attribute(*s, h, CKA_VALUE), value);
  EXPECT_EQ(get_attribute(*s, h, CKA_LABEL), bytes_of(label));
  EXPECT_EQ(get_attribute(*s, h, CKA_APPLICATION), bytes_of("keysvc-test-app"));
  EXPECT_TRUE(get_bool_attribute(*s, h, CKA_TOKEN));
  EXPECT_TRUE(get_bool_attribute(*s, h, CKA_PRIVATE));
  EXPECT_FALSE(get_bool_attribute(*s, h, CKA_MODIFIABLE));

  destroy_object(*s, h);
  EXPECT_TRUE(find_objects(*s, {.label = label}).empty());
  try {
    destroy_object(*s, h);
    FAIL() << "destroying a destroyed object succeeded";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.operation(), "C_DestroyObject");
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_OBJECT_HANDLE_INVALID));
  }
}

TEST(Object, EveryQueryFieldNarrowsTheSearch) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  Bytes id1 = bytes_of("id-one"), id2 = bytes_of("id-two");
  auto a = create_data_object(*s, "app-a", "label-x", bytes_of("1"));
  auto b = create_data_object(*s, "app-a", "label-y", bytes_of("2"));
  auto c = create_data_object(*s, "app-b", "label-y", bytes_of("3"));
  auto k1 = generate_hmac_key(*s, id1, "label-x");
  auto k2 = generate_hmac_key(*s, id2, "label-y");

  auto sorted = [](std::vector<CK_OBJECT_HANDLE> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  using V = std::vector<CK_OBJECT_HANDLE>;
  EXPECT_EQ(sorted(find_objects(*s, {})), sorted(V{a, b, c, k1, k2}));
  EXPECT_EQ(sorted(find_objects(*s, {.object_class = CKO_DATA})), sorted(V{a, b, c}));
  EXPECT_EQ(sorted(find_objects(*s, {.object_class = CKO_SECRET_KEY})), sorted(V{k1, k2}));
  EXPECT_EQ(find_objects(*s, {.id = id1}), V{k1});
  EXPECT_EQ(find_objects(*s, {.id = id2}), V{k2});
  EXPECT_EQ(sorted(find_objects(*s, {.label = std::string("label-y")})), sorted(V{b, c, k2}));
  EXPECT_EQ(sorted(find_objects(*s, {.application = std::string("app-a")})), sorted(V{a, b}));
  EXPECT_EQ(find_objects(*s, {.object_class = CKO_DATA, .label = std::string("label-y"), .application = std::string("app-b")}), V{c});
  EXPECT_EQ(find_objects(*s, {.object_class = CKO_SECRET_KEY, .id = id2, .label = std::string("label-y")}), V{k2});
  EXPECT_TRUE(find_objects(*s, {.id = bytes_of("id-three")}).empty());
  EXPECT_TRUE(find_objects(*s, {.object_class = CKO_SECRET_KEY, .id = id1, .label = std::string("label-y")}).empty());
}

// More objects than one C_FindObjects batch (64): all are returned, none twice, and the
// search is finished (the session can start another one).
TEST(Object, FindReturnsMoreThanOneBatch) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  constexpr int kCount = 70;
  std::set<CK_OBJECT_HANDLE> created;
  for (int i = 0; i < kCount; ++i) {
    std::string label = "obj-" + std::to_string(i);
    created.insert(create_data_object(*s, "bulk", label, bytes_of(label)));
  }
  auto found = find_objects(*s, {.application = std::string("bulk")});
  EXPECT_EQ(found.size(), static_cast<std::size_t>(kCount));
  EXPECT_EQ(std::set<CK_OBJECT_HANDLE>(found.begin(), found.end()), created);
  EXPECT_EQ(find_objects(*s, {.label = std::string("obj-69")}).size(), 1u);
}

TEST(Object, SensitiveKeyValueIsRefused) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  auto key = generate_hmac_key(*s, as_bytes("k"), "k");
  try {
    get_attribute(*s, key, CKA_VALUE);
    FAIL() << "read the value of a sensitive key";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_ATTRIBUTE_SENSITIVE));
    EXPECT_EQ(e.operation(), "C_GetAttributeValue");
  }
  // Its public attributes are readable.
  EXPECT_EQ(get_attribute(*s, key, CKA_LABEL), bytes_of("k"));
}

// Data objects are private: once the user logs out they are not even found.
TEST(Object, DataObjectsArePrivate) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  create_data_object(*s, "private-app", "p", as_bytes("secret-ish"));
  ASSERT_EQ(find_objects(*s, {.application = std::string("private-app")}).size(), 1u);
  ASSERT_EQ(s->fn()->C_Logout(s->handle()), static_cast<CK_RV>(CKR_OK));
  EXPECT_TRUE(find_objects(*s, {.application = std::string("private-app")}).empty());
  s->login(CKU_USER, SecretString(test::TestToken::get().pin()));
  EXPECT_EQ(find_objects(*s, {.application = std::string("private-app")}).size(), 1u);
}

// A public data object (an audit pending mark) is found and written without a login;
// SoftHSM never lets a data object's CKA_VALUE change, modifiable or not.
TEST(Object, PublicDataObjectsNeedNoLoginAndSoftHsmKeepsValuesAsMade) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  ASSERT_EQ(s->fn()->C_Logout(s->handle()), static_cast<CK_RV>(CKR_OK));
  CK_OBJECT_HANDLE h = create_data_object(*s, DataObjectOptions{.is_private = false, .modifiable = true},
                                          "public-app", "pub", as_bytes("v1"));
  EXPECT_EQ(find_objects(*s, {.application = std::string("public-app")}).size(), 1u);
  EXPECT_FALSE(get_bool_attribute(*s, h, CKA_PRIVATE));
  EXPECT_TRUE(get_bool_attribute(*s, h, CKA_MODIFIABLE));
  EXPECT_THROW(create_data_object(*s, DataObjectOptions{}, "private-app", "p", as_bytes("x")), Pkcs11Error)
      << "a private object needs a login";
  try {
    set_attribute(*s, h, CKA_VALUE, as_bytes("v2"));
    ADD_FAILURE() << "SoftHSM changed a data object's value";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_ATTRIBUTE_READ_ONLY));
  }
  EXPECT_EQ(get_attribute(*s, h, CKA_VALUE), bytes_of("v1"));
  set_attribute(*s, h, CKA_LABEL, as_bytes("pub-renamed"));  // a modifiable object's label may change
  EXPECT_EQ(get_attribute(*s, h, CKA_LABEL), bytes_of("pub-renamed"));
  destroy_object(*s, h);
  s->login(CKU_USER, SecretString(test::TestToken::get().pin()));
}

TEST(Object, GetAttributeOfUnknownHandleThrows) {
  auto s = test::user_session();
  EXPECT_THROW(get_attribute(*s, 0x7fff0000, CKA_LABEL), Pkcs11Error);
  EXPECT_THROW(get_bool_attribute(*s, 0x7fff0000, CKA_TOKEN), Pkcs11Error);
}

}  // namespace
}  // namespace keysvc::hsm
