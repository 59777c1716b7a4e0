// KEYSVC-TICKET-KDF used directly through EVP_KDF, as the ticket callback uses it.
#include "keysvc/openssl/ticket_kdf.h"

#include <gtest/gtest.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <vector>

#include "keysvc/openssl/ticket_adapter.h"
#include "provider.h"
#include "test_token.h"

namespace keysvc::openssl {
namespace {

class TicketKdfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    service_ = TicketKeyService::open(test::TestToken::get().config(),
                                       [this] { return start_ + std::chrono::seconds(offset_); });
    libctx_ = OSSL_LIB_CTX_new();
    ASSERT_NE(libctx_, nullptr);
    provider_ = load_provider(libctx_, service_);
    kdf_ = EVP_KDF_fetch(libctx_, KEYSVC_TICKET_KDF_NAME, ("provider=" + provider_.name).c_str());
    ASSERT_NE(kdf_, nullptr);
  }
  void TearDown() override {
    EVP_KDF_free(kdf_);
    OSSL_PROVIDER_unload(provider_.provider);
    OSSL_LIB_CTX_free(libctx_);
  }

  // Runs one derive; returns the output, or empty on failure, and the open status.
  std::vector<unsigned char> derive(const char* op, std::size_t outlen, const unsigned char* name = nullptr,
                                    std::size_t name_len = 0, const unsigned char* iv = nullptr,
                                    std::size_t iv_len = 0, int* open_status = nullptr) {
    EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf_);
    std::vector<OSSL_PARAM> params;
    params.push_back(OSSL_PARAM_construct_utf8_string(KEYSVC_KDF_PARAM_OPERATION, const_cast<char*>(op), 0));
    if (name) params.push_back(OSSL_PARAM_construct_octet_string(KEYSVC_KDF_PARAM_KEY_NAME, const_cast<unsigned char*>(name), name_len));
    if (iv) params.push_back(OSSL_PARAM_construct_octet_string(KEYSVC_KDF_PARAM_IV, const_cast<unsigned char*>(iv), iv_len));
    params.push_back(OSSL_PARAM_construct_end());
    std::vector<unsigned char> out(outlen);
    bool ok = EVP_KDF_derive(ctx, out.data(), out.size(), params.data()) == 1;
    if (open_status) {
      OSSL_PARAM get[] = {OSSL_PARAM_construct_int(KEYSVC_KDF_PARAM_OPEN_STATUS, open_status), OSSL_PARAM_construct_end()};
      EXPECT_EQ(EVP_KDF_CTX_get_params(ctx, get), 1);
    }
    EVP_KDF_CTX_free(ctx);
    if (!ok) out.clear();
    return out;
  }

  std::chrono::system_clock::time_point start_ = std::chrono::system_clock::now();
  int offset_ = 0;
  std::shared_ptr<TicketKeyService> service_;
  OSSL_LIB_CTX* libctx_ = nullptr;
  LoadedProvider provider_;
  EVP_KDF* kdf_ = nullptr;
};

TEST_F(TicketKdfTest, IssueThenOpenGivesTheSameKeys) {
  auto issued = derive("issue", KEYSVC_KDF_ISSUE_OUTPUT_BYTES);
  ASSERT_EQ(issued.size(), 96u);
  EXPECT_TRUE(std::equal(issued.begin(), issued.begin() + 16, service_->encrypt_key_name()->begin()));
  int status = 0;
  auto opened = derive("open", KEYSVC_KDF_OPEN_OUTPUT_BYTES, issued.data(), 16, issued.data() + 16, 16, &status);
  ASSERT_EQ(opened.size(), 64u);
  EXPECT_EQ(status, KEYSVC_OPEN_OK);
  EXPECT_TRUE(std::equal(opened.begin(), opened.end(), issued.begin() + 32));
  // AES and HMAC keys differ: separate long-term keys and labels.
  EXPECT_FALSE(std::equal(opened.begin(), opened.begin() + 32, opened.begin() + 32));
}

TEST_F(TicketKdfTest, EachIssueHasAFreshIvAndFreshKeys) {
  auto a = derive("issue", 96), b = derive("issue", 96);
  ASSERT_EQ(a.size(), 96u);
  ASSERT_EQ(b.size(), 96u);
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 16, b.begin()));    // same generation
  EXPECT_FALSE(std::equal(a.begin() + 16, a.begin() + 32, b.begin() + 16));  // different IV
  EXPECT_FALSE(std::equal(a.begin() + 32, a.end(), b.begin() + 32));  // different keys
}

TEST_F(TicketKdfTest, UnknownKeyNameIsReportedAsSuch) {
  unsigned char name[16] = {1, 2, 3}, iv[16] = {};
  int status = 0;
  EXPECT_TRUE(derive("open", 64, name, 16, iv, 16, &status).empty());
  EXPECT_EQ(status, KEYSVC_OPEN_UNKNOWN_KEY);
  EXPECT_EQ(service_->counters().unknown_key, 1u);
}

TEST_F(TicketKdfTest, OlderGenerationAsksForRenewal) {
  auto issued = derive("issue", 96);
  ASSERT_EQ(issued.size(), 96u);
  offset_ = 1;  // the new generation is younger
  service_->create_generation();
  int status = 0;
  auto opened = derive("open", 64, issued.data(), 16, issued.data() + 16, 16, &status);
  ASSERT_EQ(opened.size(), 64u);
  EXPECT_EQ(status, KEYSVC_OPEN_RENEW);
  EXPECT_TRUE(std::equal(opened.begin(), opened.end(), issued.begin() + 32));
}

TEST_F(TicketKdfTest, RejectsMalformedRequests) {
  unsigned char name[16] = {}, iv[16] = {};
  EXPECT_TRUE(derive("issue", 64).empty());                       // wrong output size
  EXPECT_TRUE(derive("open", 96, name, 16, iv, 16).empty());       // wrong output size
  EXPECT_TRUE(derive("open", 64, name, 15, iv, 16).empty());       // short key name
  EXPECT_TRUE(derive("open", 64, name, 16, iv, 17).empty());       // long IV
  EXPECT_TRUE(derive("issue", 80).empty());                       // short output
  EXPECT_TRUE(derive("open", 64, name, 16).empty());               // no IV
  EXPECT_TRUE(derive("export-keys", 64, name, 16, iv, 16).empty());  // unknown operation
  // Refused in the KDF: the service was never asked. (Its sign-call count is not the
  // measure: the maintenance thread derives the epoch keys meanwhile, in its own time.)
  const ServiceCounters c = service_->counters();
  EXPECT_EQ(c.issued + c.opened + c.unknown_key + c.retired_key + c.hsm_errors, 0u);
}

}  // namespace
}  // namespace keysvc::openssl
