#include "static_tickets.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

namespace keysvc::bench {

namespace {

int key_index() {
  static const int index = SSL_CTX_get_ex_new_index(
      0, nullptr, nullptr, nullptr,
      [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { free_static_key(static_cast<StaticTicketKey*>(ptr)); });
  return index;
}

bool set_mac_key(const StaticTicketKey& key, EVP_MAC_CTX* hctx) {
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key.hmac_key.data()),
                                        key.hmac_key.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end(),
  };
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

int callback(SSL* s, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx,
             int enc) {
  auto* key = static_cast<StaticTicketKey*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), key_index()));
  if (key == nullptr) return enc ? -1 : 0;
  return static_ticket_setup(*key, key_name, iv, cctx, hctx, enc);
}

}  // namespace

StaticTicketKey* new_static_key() {
  auto* key = new StaticTicketKey;
  if (RAND_bytes(key->name.data(), key->name.size()) != 1 || RAND_bytes(key->aes_key.data(), key->aes_key.size()) != 1 ||
      RAND_bytes(key->hmac_key.data(), key->hmac_key.size()) != 1) {
    delete key;
    throw std::runtime_error("RAND_bytes failed");
  }
  key->cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
  if (key->cipher == nullptr) {
    delete key;
    throw std::runtime_error("cannot fetch AES-256-CBC");
  }
  return key;
}

void free_static_key(StaticTicketKey* key) {
  if (key == nullptr) return;
  EVP_CIPHER_free(key->cipher);
  OPENSSL_cleanse(key->aes_key.data(), key->aes_key.size());
  OPENSSL_cleanse(key->hmac_key.data(), key->hmac_key.size());
  delete key;
}

int static_ticket_setup(const StaticTicketKey& key, unsigned char key_name[16], unsigned char* iv,
                        EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
  if (enc == 1) {
    // New ticket: our name, a fresh IV.
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(key.cipher)) != 1) return -1;
    if (EVP_EncryptInit_ex2(cctx, key.cipher, key.aes_key.data(), iv, nullptr) != 1) return -1;
    if (!set_mac_key(key, hctx)) return -1;
    std::memcpy(key_name, key.name.data(), key.name.size());
    return 1;
  }
  // Presented ticket: only our one key name is known (nginx would search its keys).
  if (std::memcmp(key_name, key.name.data(), key.name.size()) != 0) return 0;
  if (!set_mac_key(key, hctx)) return -1;
  if (EVP_DecryptInit_ex2(cctx, key.cipher, key.aes_key.data(), iv, nullptr) != 1) return -1;
  return 1;
}

void install_static_tickets(SSL_CTX* ctx) {
  StaticTicketKey* key = new_static_key();
  if (SSL_CTX_set_ex_data(ctx, key_index(), key) != 1) {
    free_static_key(key);
    throw std::runtime_error("SSL_CTX_set_ex_data failed");
  }
  if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, callback) != 1)
    throw std::runtime_error("SSL_CTX_set_tlsext_ticket_key_evp_cb failed");
}

}  // namespace keysvc::bench
