#include "cert.h"

#include <fcntl.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "ossl.h"

namespace tls_server {
namespace {

constexpr long kValidSeconds = 365L * 24 * 3600;

// Writes `data` to a new file (never overwrites one), checking every step.
void write_new_file(const std::string& path, const std::string& data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  // The umask can only remove bits; make the mode exact.
  if (::fchmod(fd, mode) != 0 || ::close(fd) != 0) {
    ::unlink(path.c_str());
    throw std::runtime_error("cannot finish " + path + ": " + std::strerror(errno));
  }
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len < 0 || data == nullptr) throw OpenSslError("BIO_get_mem_data");
  return std::string(data, static_cast<std::size_t>(len));
}

void add_extension(X509* cert, X509V3_CTX* v3, int nid, const char* value) {
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, v3, nid, value));
  if (!ext) throw OpenSslError(std::string("X509V3_EXT_conf_nid(") + OBJ_nid2sn(nid) + ")");
  if (X509_add_ext(cert, ext.get(), -1) != 1) throw OpenSslError("X509_add_ext");
}

std::pair<std::string, std::string> make_self_signed() {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) throw OpenSslError("EC P-256 key generation");

  X509Ptr cert(X509_new());
  if (!cert) throw OpenSslError("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) throw OpenSslError("X509_set_version");

  BignumPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1)
    throw OpenSslError("serial number");
  if (BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr)
    throw OpenSslError("BN_to_ASN1_INTEGER");

  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValidSeconds) == nullptr)
    throw OpenSslError("certificate validity");

  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1,
                                 -1, 0) != 1)
    throw OpenSslError("certificate subject");
  if (X509_set_issuer_name(cert.get(), name) != 1) throw OpenSslError("X509_set_issuer_name");
  if (X509_set_pubkey(cert.get(), key.get()) != 1) throw OpenSslError("X509_set_pubkey");

  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  add_extension(cert.get(), &v3, NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), &v3, NID_key_usage, "critical,digitalSignature");
  add_extension(cert.get(), &v3, NID_ext_key_usage, "serverAuth");
  add_extension(cert.get(), &v3, NID_subject_key_identifier, "hash");
  add_extension(cert.get(), &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");

  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) throw OpenSslError("X509_sign");

  BioPtr cert_pem(BIO_new(BIO_s_mem()));
  BioPtr key_pem(BIO_new(BIO_s_mem()));
  if (!cert_pem || !key_pem) throw OpenSslError("BIO_new");
  if (PEM_write_bio_X509(cert_pem.get(), cert.get()) != 1) throw OpenSslError("PEM_write_bio_X509");
  if (PEM_write_bio_PrivateKey(key_pem.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw OpenSslError("PEM_write_bio_PrivateKey");
  return {bio_contents(cert_pem.get()), bio_contents(key_pem.get())};
}

}  // namespace

bool ensure_certificate(const std::string& cert_path, const std::string& key_path) {
  std::error_code ec;
  const bool have_cert = std::filesystem::exists(cert_path, ec);
  const bool have_key = std::filesystem::exists(key_path, ec);
  if (have_cert && have_key) return false;
  if (have_cert != have_key)
    throw std::runtime_error(have_cert ? "certificate " + cert_path + " exists but key " + key_path + " does not"
                                       : "key " + key_path + " exists but certificate " + cert_path + " does not");

  auto [cert_pem, key_pem] = make_self_signed();
  write_new_file(key_path, key_pem, 0600);
  try {
    write_new_file(cert_path, cert_pem, 0644);
  } catch (...) {
    ::unlink(key_path.c_str());
    throw;
  }
  return true;
}

}  // namespace tls_server
