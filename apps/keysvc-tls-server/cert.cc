#include "cert.h"

#include <fcntl.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "keysvc/openssl/ossl.h"
#include "keysvc/openssl/self_signed_cert.h"

namespace tls_server {
namespace {

using keysvc::openssl::BioPtr;
using keysvc::openssl::EvpPkeyPtr;
using keysvc::openssl::OpenSslError;

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

std::pair<std::string, std::string> make_self_signed() {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) throw OpenSslError("EC P-256 key generation");
  keysvc::openssl::SelfSignedCertificate cert = keysvc::openssl::make_self_signed_certificate(key.get());

  BioPtr key_pem(BIO_new(BIO_s_mem()));
  if (!key_pem) throw OpenSslError("BIO_new");
  if (PEM_write_bio_PrivateKey(key_pem.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw OpenSslError("PEM_write_bio_PrivateKey");
  return {cert.pem, bio_contents(key_pem.get())};
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
