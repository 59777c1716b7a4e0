#include "keysvc/audit_key.h"

#include <openssl/rand.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <set>

#include "keysvc/audit_anchor.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/key_custody.h"
#include "keysvc/log.h"

namespace keysvc::audit {

namespace {

std::optional<hsm::Bytes> from_hex(std::string_view text) {
  if (text.empty() || text.size() % 2 != 0 || text.size() > 256) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  hsm::Bytes out;
  for (std::size_t k = 0; k < text.size(); k += 2) {
    int hi = nibble(text[k]), lo = nibble(text[k + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<std::uint8_t>(hi * 16 + lo));
  }
  return out;
}

// Whether the audit key `h` has keysvc's custody attributes (key_custody.h). A key planted
// with a known value would let whoever planted it forge seals: it is never used, and
// said once per process and key.
bool trusted(hsm::Session& session, CK_OBJECT_HANDLE h, const hsm::Bytes& id) {
  const std::string why = custody_refusal(hsm::read_custody(session, h), CustodyRule{});
  if (why.empty()) return true;
  static std::mutex mutex;
  static std::set<hsm::Bytes> said;
  std::lock_guard lock(mutex);
  if (said.insert(id).second)
    logger()->error("audit key {} in the token refused, never used for seals: {}", to_hex(id), why);
  return false;
}

Mac mac_in_token(hsm::Session& s, CK_OBJECT_HANDLE key, std::span<const std::uint8_t> message) {
  Mac mac{};
  hsm::hmac_sha256(s, key, message, mac);
  return mac;
}

}  // namespace

std::vector<AuditKey> find_audit_keys(hsm::Session& session) {
  std::vector<AuditKey> keys;
  for (CK_OBJECT_HANDLE h :
       hsm::find_objects(session, {.object_class = CKO_SECRET_KEY, .label = std::string(kAuditKeyLabel)})) {
    try {
      hsm::Bytes id = hsm::get_attribute(session, h, CKA_ID);
      if (trusted(session, h, id)) keys.push_back({h, std::move(id)});
    } catch (const hsm::Pkcs11Error& e) {
      if (e.rv() != CKR_OBJECT_HANDLE_INVALID) throw;  // destroyed meanwhile
    }
  }
  std::sort(keys.begin(), keys.end(), [](const AuditKey& a, const AuditKey& b) { return a.id < b.id; });
  return keys;
}

std::optional<AuditKey> find_audit_key(hsm::Session& session, std::string_view id_hex) {
  auto id = from_hex(id_hex);
  if (!id) return std::nullopt;
  auto handles = hsm::find_objects(
      session, {.object_class = CKO_SECRET_KEY, .id = *id, .label = std::string(kAuditKeyLabel)});
  for (CK_OBJECT_HANDLE h : handles)
    if (trusted(session, h, *id)) return AuditKey{h, *id};
  return std::nullopt;
}

AuditKey find_or_create_audit_key(hsm::Session& session) {
  auto keys = find_audit_keys(session);
  if (!keys.empty()) return keys.front();
  hsm::Bytes id(kAuditKeyIdBytes);
  if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1) throw hsm::Error("RAND_bytes failed while naming the audit key");
  CK_OBJECT_HANDLE h = hsm::generate_hmac_key(session, id, kAuditKeyLabel);
  return {h, id};
}

Sealer token_sealer(TokenGateway& gateway) {
  AuditKey key = gateway.call([](hsm::Session& s) { return find_or_create_audit_key(s); });
  std::string id_hex = key.id_hex();
  // The key's handle, per module generation: a seal is C_SignInit + C_Sign, no search
  // (searched again after a module restart or if the handle went stale).
  struct Cached {
    std::mutex mutex;
    std::uint64_t generation = 0;
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  };
  auto cached = std::make_shared<Cached>();
  auto hmac = [&gateway, id_hex, cached](std::span<const std::uint8_t> message) {
    return gateway.call([id_hex, cached, m = std::vector<std::uint8_t>(message.begin(), message.end())](
                            hsm::Session& s) {
      CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
      {
        std::lock_guard lock(cached->mutex);
        if (cached->generation == s.generation()) h = cached->handle;
      }
      if (h != CK_INVALID_HANDLE) {
        try {
          return mac_in_token(s, h, m);
        } catch (const hsm::Pkcs11Error& e) {
          if (e.rv() != CKR_KEY_HANDLE_INVALID && e.rv() != CKR_OBJECT_HANDLE_INVALID) throw;
        }
      }
      auto k = find_audit_key(s, id_hex);
      if (!k) throw hsm::Error("the audit key " + id_hex + " is no longer in the token");
      {
        std::lock_guard lock(cached->mutex);
        cached->generation = s.generation();
        cached->handle = k->handle;
      }
      return mac_in_token(s, k->handle, m);
    });
  };
  return Sealer{id_hex, std::move(hmac), token_keyed_hmac(gateway), AnchorStore::on_gateway(gateway)};
}

KeyedHmac token_keyed_hmac(TokenGateway& gateway) {
  return [&gateway](std::string_view key_id_hex, std::span<const std::uint8_t> message) -> std::optional<Mac> {
    return gateway.call([id = std::string(key_id_hex), m = std::vector<std::uint8_t>(message.begin(), message.end())](
                            hsm::Session& s) -> std::optional<Mac> {
      auto k = find_audit_key(s, id);
      if (!k) return std::nullopt;
      return mac_in_token(s, k->handle, m);
    });
  };
}

TokenView token_view(TokenGateway& gateway, const AuditConfig& config) {
  TokenView v(token_keyed_hmac(gateway));
  v.anchors = AnchorStore::on_gateway(gateway);
  v.host = this_host();
  v.retention = config.anchor_retention;
  v.now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                 .count();
  return v;
}

}  // namespace keysvc::audit
