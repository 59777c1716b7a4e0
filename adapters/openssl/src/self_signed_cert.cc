#include "keysvc/openssl/self_signed_cert.h"

#include <openssl/pem.h>

#include "keysvc/openssl/ossl.h"

namespace keysvc::openssl {

namespace {

void add_extension(X509* cert, X509V3_CTX* v3, int nid, const std::string& value) {
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, v3, nid, value.c_str()));
  if (!ext) throw OpenSslError(std::string("certificate extension ") + OBJ_nid2sn(nid));
  if (X509_add_ext(cert, ext.get(), -1) != 1) throw OpenSslError("X509_add_ext");
}

template <typename T, typename Encode>
std::vector<std::uint8_t> der_of(const T* object, Encode encode) {
  unsigned char* out = nullptr;
  int len = encode(object, &out);
  if (len <= 0 || out == nullptr) throw OpenSslError("DER encoding");
  std::vector<std::uint8_t> der(out, out + len);
  OPENSSL_free(out);
  return der;
}

}  // namespace

SelfSignedCertificate make_self_signed_certificate(EVP_PKEY* key, const CertificateRequest& request) {
  X509Ptr cert(X509_new());
  if (!cert) throw OpenSslError("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) throw OpenSslError("X509_set_version");

  BignumPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1)
    throw OpenSslError("serial number");
  if (BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr)
    throw OpenSslError("BN_to_ASN1_INTEGER");

  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), request.valid_days * 24L * 3600) == nullptr)
    throw OpenSslError("certificate validity");

  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(request.common_name.c_str()), -1, -1,
                                 0) != 1)
    throw OpenSslError("certificate subject");
  if (X509_set_issuer_name(cert.get(), name) != 1) throw OpenSslError("X509_set_issuer_name");
  if (X509_set_pubkey(cert.get(), key) != 1) throw OpenSslError("X509_set_pubkey");

  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  add_extension(cert.get(), &v3, NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), &v3, NID_key_usage, "critical,digitalSignature");
  add_extension(cert.get(), &v3, NID_ext_key_usage, "serverAuth");
  add_extension(cert.get(), &v3, NID_subject_key_identifier, "hash");
  if (!request.alt_names.empty()) add_extension(cert.get(), &v3, NID_subject_alt_name, request.alt_names);

  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0) throw OpenSslError("signing the certificate");

  SelfSignedCertificate out;
  BioPtr pem(BIO_new(BIO_s_mem()));
  if (!pem || PEM_write_bio_X509(pem.get(), cert.get()) != 1) throw OpenSslError("PEM_write_bio_X509");
  char* data = nullptr;
  long len = BIO_get_mem_data(pem.get(), &data);
  if (len <= 0 || data == nullptr) throw OpenSslError("BIO_get_mem_data");
  out.pem.assign(data, static_cast<std::size_t>(len));
  out.der = der_of(cert.get(), [](const X509* c, unsigned char** p) { return i2d_X509(c, p); });
  out.subject_der = der_of(X509_get_subject_name(cert.get()),
                           [](const X509_NAME* n, unsigned char** p) { return i2d_X509_NAME(n, p); });
  return out;
}

}  // namespace keysvc::openssl
