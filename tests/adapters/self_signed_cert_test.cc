// Self-signed server certificates: the fields keysvc-tls-server and keysvcctl rely on,
// and a signature that verifies under the certified key.
#include "keysvc/openssl/self_signed_cert.h"

#include <gtest/gtest.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keysvc/openssl/ossl.h"

namespace keysvc::openssl {
namespace {

X509Ptr parse(const std::vector<std::uint8_t>& der) {
  const unsigned char* p = der.data();
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

TEST(SelfSignedCert, VerifiesUnderItsKeyWithTheRequestedNames) {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_TRUE(key);
  SelfSignedCertificate c = make_self_signed_certificate(key.get(), {.common_name = "demo.example",
                                                                     .alt_names = "DNS:demo.example",
                                                                     .valid_days = 30});
  auto cert = parse(c.der);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_verify(cert.get(), key.get()), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "demo.example", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_purpose(cert.get(), X509_PURPOSE_SSL_SERVER, 0), 1);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  // Valid now, not after 31 days.
  EXPECT_EQ(X509_cmp_current_time(X509_get0_notBefore(cert.get())), -1);
  time_t in_31_days = time(nullptr) + 31 * 24 * 3600;
  EXPECT_EQ(X509_cmp_time(X509_get0_notAfter(cert.get()), &in_31_days), -1);
  // subject_der is the DER of the subject, and the PEM is the same certificate.
  const unsigned char* p = c.subject_der.data();
  X509_NAME* subject = d2i_X509_NAME(nullptr, &p, static_cast<long>(c.subject_der.size()));
  ASSERT_NE(subject, nullptr);
  EXPECT_EQ(X509_NAME_cmp(subject, X509_get_subject_name(cert.get())), 0);
  X509_NAME_free(subject);
  EXPECT_EQ(c.pem.rfind("-----BEGIN CERTIFICATE-----", 0), 0u);
}

TEST(SelfSignedCert, DefaultsToLocalhostAndOneYear) {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  ASSERT_TRUE(key);
  auto cert = parse(make_self_signed_certificate(key.get()).der);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_verify(cert.get(), key.get()), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
  time_t in_364_days = time(nullptr) + 364 * 24 * 3600;
  EXPECT_EQ(X509_cmp_time(X509_get0_notAfter(cert.get()), &in_364_days), 1);
}

TEST(SelfSignedCert, BadAltNamesAreAnError) {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  EXPECT_THROW(make_self_signed_certificate(key.get(), {.alt_names = "NOPE:x"}), std::runtime_error);
}

}  // namespace
}  // namespace keysvc::openssl
