// server-key create: a TLS server key pair generated in the token (EC P-256 or
// RSA-2048; sign only, never extractable: see keysvc/openssl/server_key_pair.h) and a
// self-signed certificate for it, signed in the token, written to a file and
// optionally stored in the token. For demos: keysvc-tls-server --key URI, or nginx with
// the pkcs11 engine (README).
//
// Nothing in the token changes unless everything succeeds: the input is checked first,
// and objects already created are destroyed if a later step fails.
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "cli.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/key_name.h"
#include "keysvc/openssl/self_signed_cert.h"
#include "keysvc/openssl/server_key_pair.h"
#include "keysvc/openssl/token_private_key.h"
#include "output.h"

namespace keysvcctl {

namespace {

namespace hsm = keysvc::hsm;
namespace kso = keysvc::openssl;

constexpr std::size_t kIdBytes = 8;

struct CreateOptions {
  std::string label;
  std::string type = "ec-p256";
  std::string cert_out;
  std::string common_name = "localhost";
  std::string alt_names = "DNS:localhost,IP:127.0.0.1";
  long days = 365;
  bool store_cert = false;
  bool json = false;
};

// Creates `path` (never overwriting) with `data`, mode 0644. Throws std::runtime_error;
// leaves no partial file.
void write_new_file(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  std::size_t done = 0;
  bool ok = true;
  while (ok && done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ok = false;
    else done += static_cast<std::size_t>(n);
  }
  const int err = errno;
  if (::close(fd) != 0 || !ok) {
    ::unlink(path.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(ok ? errno : err));
  }
}

// Usage checks that need no token (exit 2), and the certificate file must not exist
// yet (exit 1), all before the token is touched.
void check_input(const CreateOptions& o) {
  check_uri_label(o.label);
  if (o.common_name.empty() || o.common_name.size() > 64) throw UsageError("--subject must be 1 to 64 characters");
  std::error_code ec;
  if (std::filesystem::exists(o.cert_out, ec))
    throw hsm::ConfigError("certificate file " + o.cert_out + " already exists");
  const auto parent = std::filesystem::path(o.cert_out).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    throw hsm::ConfigError("no directory " + parent.string() + " for the certificate");
}

// Destroys what a failed create made, so the token is as it was.
class Rollback {
 public:
  explicit Rollback(hsm::Session& s) : session_(s) {}
  ~Rollback() {
    for (CK_OBJECT_HANDLE h : created_) {
      try {
        hsm::destroy_object(session_, h);
      } catch (const hsm::Error&) {
        // Nothing more to do; the error that got us here is reported.
      }
    }
  }
  void add(CK_OBJECT_HANDLE h) { created_.push_back(h); }
  void commit() noexcept { created_.clear(); }

 private:
  hsm::Session& session_;
  std::vector<CK_OBJECT_HANDLE> created_;
};

int server_key_create(const Cli& cli, const CreateOptions& o) {
  check_input(o);
  const kso::ServerKeyType type = o.type == "rsa-2048" ? kso::ServerKeyType::kRsa2048 : kso::ServerKeyType::kEcP256;
  keysvc::Config config;
  auto gateway = cli.open_gateway(&config);
  const std::string uri = kso::private_key_uri(config.hsm.token_uri, o.label);

  std::vector<std::uint8_t> id(kIdBytes);
  if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1) throw std::runtime_error("RAND_bytes failed");

  // One call through the gateway: the key pair, the certificate signed in the token
  // through the same path servers use, and the rollback if any step fails.
  gateway->call([o, type, id, uri, defaults = kso::token_key_defaults(config)](hsm::Session& session) {
    if (!kso::objects_named(session, o.label, id).empty())
      throw hsm::ConfigError("the token already has objects labelled '" + o.label + "'");
    Rollback rollback(session);
    kso::ServerKeyPair pair = kso::generate_server_key_pair(session, type, id, o.label);
    rollback.add(pair.private_key);
    rollback.add(pair.public_key);
    kso::TokenPrivateKey key = kso::TokenPrivateKey::open(uri, defaults);
    kso::SelfSignedCertificate cert = kso::make_self_signed_certificate(
        key.pkey(), {.common_name = o.common_name, .alt_names = o.alt_names, .valid_days = o.days});
    if (o.store_cert) rollback.add(kso::store_certificate(session, cert.der, cert.subject_der, id, o.label));
    write_new_file(o.cert_out, cert.pem);
    rollback.commit();
  });

  if (o.json) {
    Json j;
    j["label"] = o.label;
    j["type"] = kso::to_string(type);
    j["id"] = keysvc::to_hex(id);
    j["key_uri"] = uri;
    j["certificate"] = o.cert_out;
    j["certificate_in_token"] = o.store_cert;
    std::cout << dump_pretty(j) << '\n';
  } else {
    std::cout << "created " << kso::to_string(type) << " key '" << o.label << "' (sign only, never extractable)\n"
              << "key:         " << uri << '\n'
              << "certificate: " << o.cert_out << (o.store_cert ? " (also stored in the token)" : "") << '\n';
  }
  return kExitOk;
}

}  // namespace

void add_server_key_commands(Cli& cli) {
  CLI::App* group = cli.add_group("server-key", "A TLS server's own private key in the token (for demos)");
  auto o = std::make_shared<CreateOptions>();
  CLI::App* create = cli.add_command(
      "create",
      "Generate a signing key pair in the token (sign only, never extractable) and a self-signed certificate "
      "for it, signed in the token. Prints the key's PKCS#11 URI for keysvc-tls-server --key or nginx",
      [&cli, o] { return server_key_create(cli, *o); }, group);
  create->add_option("--label", o->label, "Label of the key pair (and certificate) in the token")
      ->type_name("LABEL")
      ->required();
  create->add_option("--type", o->type, "Key type")->capture_default_str()->check(CLI::IsMember({"ec-p256", "rsa-2048"}));
  create->add_option("--cert-out", o->cert_out, "Where to write the certificate (PEM); must not exist")
      ->type_name("FILE")
      ->required();
  create->add_flag("--store-cert", o->store_cert, "Also store the certificate in the token (same label and id)");
  create->add_option("--subject", o->common_name, "The certificate's common name")->capture_default_str();
  create->add_option("--alt-names", o->alt_names, "subjectAltName, OpenSSL syntax")->capture_default_str();
  create->add_option("--days", o->days, "Validity in days")->capture_default_str()->check(CLI::Range(1L, 3650L));
  Cli::add_json_flag(create, o->json);
}

}  // namespace keysvcctl
