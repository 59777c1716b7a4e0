#include "keysvc/openssl/token_private_key.h"

#include <libp11.h>
#include <p11-kit/uri.h>

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/session.h"
#include "keysvc/hsm/token.h"
#include "keysvc/hsm/token_uri.h"

namespace keysvc::openssl {

namespace {

using hsm::ConfigError;

struct UriDeleter {
  void operator()(P11KitUri* u) const noexcept { p11_kit_uri_free(u); }
};
using UriPtr = std::unique_ptr<P11KitUri, UriDeleter>;

std::string format_uri(P11KitUri* uri, P11KitUriType type) {
  char* out = nullptr;
  if (p11_kit_uri_format(uri, type, &out) != P11_KIT_URI_OK || out == nullptr) return {};
  std::string text(out);
  free(out);
  return text;
}

// The parsed key URI. `shown` never contains a pin-value.
struct KeyUri {
  UriPtr uri;
  std::string shown;
  std::shared_ptr<const hsm::SecretString> pin_value;  // the URI's, in secure memory
  std::optional<std::string> label;
  std::optional<std::vector<unsigned char>> id;
};

KeyUri parse_key_uri(std::string_view text) {
  KeyUri k;
  k.uri.reset(p11_kit_uri_new());
  if (!k.uri) throw std::bad_alloc();
  // A pin-value goes to secure memory first: p11-kit never sees it, the text never has it.
  const hsm::TokenUriText split{std::string(text)};
  k.pin_value = split.pin_value();
  k.shown = split.text();
  int rc = p11_kit_uri_parse(k.shown.c_str(), P11_KIT_URI_FOR_OBJECT_ON_TOKEN, k.uri.get());
  if (rc != P11_KIT_URI_OK) {
    const std::size_t query = k.shown.find('?');
    throw ConfigError("invalid PKCS#11 key URI '" +
                      (query == std::string::npos ? k.shown : k.shown.substr(0, query) + "?...") +
                      "': " + p11_kit_uri_message(rc));
  }
  if (p11_kit_uri_get_pin_value(k.uri.get()) != nullptr)
    throw ConfigError("invalid PKCS#11 key URI (URI with pin-value): write its pin-value as a plain pin-value=... query attribute");

  if (CK_ATTRIBUTE_PTR cls = p11_kit_uri_get_attribute(k.uri.get(), CKA_CLASS)) {
    CK_OBJECT_CLASS value = 0;
    if (cls->ulValueLen == sizeof value) std::memcpy(&value, cls->pValue, sizeof value);
    if (value != CKO_PRIVATE_KEY)
      throw ConfigError("PKCS#11 key URI '" + k.shown + "' must name a private key (type=private)");
  }
  if (CK_ATTRIBUTE_PTR label = p11_kit_uri_get_attribute(k.uri.get(), CKA_LABEL))
    k.label.emplace(static_cast<const char*>(label->pValue), label->ulValueLen);
  if (CK_ATTRIBUTE_PTR id = p11_kit_uri_get_attribute(k.uri.get(), CKA_ID)) {
    const auto* p = static_cast<const unsigned char*>(id->pValue);
    k.id.emplace(p, p + id->ulValueLen);
  }
  if (!k.label && !k.id)
    throw ConfigError("PKCS#11 key URI '" + k.shown + "' names no key: add object=LABEL or id=%XX...");
  return k;
}

// libp11's state for one module: loaded on first use, never unloaded, its slot list
// never released (see the header: unloading finalizes the module, and releasing the
// last reference to a slot calls C_CloseAllSessions on it).
struct Libp11Module {
  PKCS11_CTX* ctx = nullptr;
  PKCS11_SLOT* slots = nullptr;
  unsigned int slot_count = 0;
};

std::mutex g_libp11_mutex;

Libp11Module& libp11_module(const std::string& path) {
  static auto* modules = new std::map<std::string, Libp11Module>();  // intentionally never freed
  auto it = modules->find(path);
  if (it != modules->end()) return it->second;
  Libp11Module m;
  m.ctx = PKCS11_CTX_new();
  if (m.ctx == nullptr) throw std::bad_alloc();
  // keysvc's hsm::Module initialised the module first; libp11 accepts
  // CKR_CRYPTOKI_ALREADY_INITIALIZED and the dlopen handle is the same.
  if (PKCS11_CTX_load(m.ctx, path.c_str()) != 0) {
    PKCS11_CTX_free(m.ctx);
    throw ConfigError("libp11 cannot load PKCS#11 module " + path);
  }
  if (PKCS11_enumerate_slots(m.ctx, &m.slots, &m.slot_count) != 0)
    throw ConfigError("libp11 cannot list the slots of " + path);
  return modules->emplace(path, m).first->second;
}

PKCS11_SLOT* libp11_slot(const Libp11Module& m, CK_SLOT_ID id) {
  for (unsigned int i = 0; i < m.slot_count; ++i)
    if (PKCS11_get_slotid_from_slot(&m.slots[i]) == id && m.slots[i].token != nullptr) return &m.slots[i];
  return nullptr;
}

bool key_matches(const PKCS11_KEY& key, const KeyUri& uri) {
  if (uri.label && (key.label == nullptr || *uri.label != key.label)) return false;
  if (uri.id && (key.id_len != uri.id->size() || std::memcmp(key.id, uri.id->data(), key.id_len) != 0))
    return false;
  return true;
}

hsm::PinSource pin_for(const KeyUri& k, const TokenKeyDefaults& defaults) {
  if (const char* source = p11_kit_uri_get_pin_source(k.uri.get())) return hsm::PinSource::parse(source);
  if (k.pin_value) return hsm::PinSource::literal(hsm::SecretString::copy_of(k.pin_value->reveal()));
  if (defaults.pin) return *defaults.pin;
  throw ConfigError("no PIN source for key '" + k.shown + "': add pin-source to the URI or give one");
}

}  // namespace

struct TokenPrivateKey::Impl {
  std::shared_ptr<hsm::Module> module;
  std::unique_ptr<hsm::Session> login_keeper;  // keeps the application's login alive
  EVP_PKEY* pkey = nullptr;
  std::string uri;
  ~Impl() {
    if (pkey != nullptr) EVP_PKEY_free(pkey);
  }
};

TokenPrivateKey TokenPrivateKey::open(std::string_view uri_text, const TokenKeyDefaults& defaults) {
  KeyUri k = parse_key_uri(uri_text);
  const char* uri_module = p11_kit_uri_get_module_path(k.uri.get());
  const std::string module_path = uri_module ? uri_module : defaults.module;
  if (module_path.empty())
    throw ConfigError("no PKCS#11 module for key '" + k.shown + "': add module-path to the URI or give one");
  hsm::PinSource pin = pin_for(k, defaults);

  auto impl = std::make_unique<Impl>();
  impl->uri = k.shown;
  impl->module = hsm::Module::load(module_path);
  // The token part of the URI selects the token, with hsm::Token's checks and messages.
  hsm::Token token = hsm::Token::find(impl->module, hsm::TokenUri::parse(format_uri(k.uri.get(), P11_KIT_URI_FOR_TOKEN)));
  // libp11 holds its own sessions on the module from here on (below), and this key's
  // EVP_PKEY its handles: keysvc must never finalize the module (hsm::Module::restart).
  impl->module->add_other_user();
  impl->login_keeper = std::make_unique<hsm::Session>(token, false);
  if (!impl->login_keeper->user_logged_in()) impl->login_keeper->login(CKU_USER, pin.read());

  std::lock_guard lock(g_libp11_mutex);
  Libp11Module& m = libp11_module(module_path);
  PKCS11_SLOT* slot = libp11_slot(m, token.slot());
  if (slot == nullptr)
    throw ConfigError("libp11 does not see the token of '" + k.shown +
                      "' (created after the process first used the module?)");
  PKCS11_KEY* keys = nullptr;
  unsigned int key_count = 0;
  if (PKCS11_enumerate_keys(slot->token, &keys, &key_count) != 0)
    throw ConfigError("cannot list the private keys of the token of '" + k.shown + "'");
  PKCS11_KEY* found = nullptr;
  unsigned int matches = 0;
  for (unsigned int i = 0; i < key_count; ++i) {
    if (key_matches(keys[i], k)) {
      found = &keys[i];
      ++matches;
    }
  }
  if (matches == 0) throw ConfigError("no private key matches '" + k.shown + "'");
  if (matches > 1)
    throw ConfigError(std::to_string(matches) + " private keys match '" + k.shown + "': add id= or object=");
  impl->pkey = PKCS11_get_private_key(found);
  if (impl->pkey == nullptr) throw ConfigError("libp11 cannot use the private key '" + k.shown + "'");
  return TokenPrivateKey(std::move(impl));
}

TokenPrivateKey::TokenPrivateKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenPrivateKey::TokenPrivateKey(TokenPrivateKey&&) noexcept = default;
TokenPrivateKey& TokenPrivateKey::operator=(TokenPrivateKey&&) noexcept = default;
TokenPrivateKey::~TokenPrivateKey() = default;

EVP_PKEY* TokenPrivateKey::pkey() const noexcept { return impl_->pkey; }
const std::string& TokenPrivateKey::uri() const noexcept { return impl_->uri; }

std::string TokenPrivateKey::describe_type() const {
  const int bits = EVP_PKEY_get_bits(impl_->pkey);
  switch (EVP_PKEY_get_base_id(impl_->pkey)) {
    case EVP_PKEY_EC:
      return bits == 256 ? "EC P-256" : "EC " + std::to_string(bits);
    case EVP_PKEY_RSA:
      return "RSA " + std::to_string(bits);
    default:
      return "key type " + std::to_string(EVP_PKEY_get_base_id(impl_->pkey));
  }
}

TokenKeyDefaults token_key_defaults(const Config& config) {
  TokenKeyDefaults d;
  d.module = config.hsm.module;
  if (!config.hsm.pin_source.empty()) {
    d.pin = hsm::PinSource::parse(config.hsm.pin_source);
    return d;
  }
  hsm::TokenUri uri = hsm::TokenUri::parse(config.hsm.token_uri);
  if (auto source = uri.pin_source()) {
    d.pin = hsm::PinSource::parse(*source);
  } else if (auto value = uri.pin_value()) {
    d.pin = hsm::PinSource::literal(std::move(*value));
  }
  return d;
}

std::string private_key_uri(std::string_view token_uri, const std::string& label) {
  UriPtr uri(p11_kit_uri_new());
  if (!uri) throw std::bad_alloc();
  std::string copy(token_uri);
  hsm::WipeOnExit wipe_copy(copy);
  if (p11_kit_uri_parse(copy.c_str(), P11_KIT_URI_FOR_TOKEN, uri.get()) != P11_KIT_URI_OK)
    throw ConfigError("invalid PKCS#11 token URI");
  const CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE attrs[] = {{CKA_CLASS, const_cast<CK_OBJECT_CLASS*>(&cls), sizeof cls},
                          {CKA_LABEL, const_cast<char*>(label.data()), static_cast<CK_ULONG>(label.size())}};
  for (CK_ATTRIBUTE& a : attrs)
    if (p11_kit_uri_set_attribute(uri.get(), &a) != P11_KIT_URI_OK) throw std::bad_alloc();
  std::string text = format_uri(uri.get(), P11_KIT_URI_FOR_OBJECT_ON_TOKEN);
  if (text.empty()) throw ConfigError("cannot format a key URI for token " + std::string(token_uri.substr(0, token_uri.find('?'))));
  return text;
}

bool is_pkcs11_uri(std::string_view text) noexcept { return text.rfind("pkcs11:", 0) == 0; }

}  // namespace keysvc::openssl
