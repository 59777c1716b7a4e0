// The audit seal key: one dedicated HMAC key in the token that MACs the audit log's
// seal records (audit_log.h). Never used for tickets; tickets' keys never seal.
//
//   CKO_SECRET_KEY  CKK_GENERIC_SECRET, 32 bytes, label "keysvc-audit-seal",
//                   CKA_ID = 16 random bytes; the attributes of every keysvc HMAC key
//                   (hsm/secret_key.h: sensitive, never extractable, sign only).
// See docs/TOKEN-LAYOUT.md. Seal records name the key by its CKA_ID in hex, so logs
// sealed by an older audit key still verify while that key exists in the token.
#pragma once

#include <p11-kit/pkcs11.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keysvc/audit_log.h"
#include "keysvc/audit_verify.h"
#include "keysvc/config.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/session.h"
#include "keysvc/token_gateway.h"

namespace keysvc::audit {

inline constexpr char kAuditKeyLabel[] = "keysvc-audit-seal";
inline constexpr std::size_t kAuditKeyIdBytes = 16;

struct AuditKey {
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  hsm::Bytes id;
  std::string id_hex() const { return to_hex(id); }
};

// Only keys with keysvc's custody attributes count (key_custody.h): one that lacks them
// (imported with a known value, extractable, ...) is never used to seal or to verify,
// and is logged once per process.
//
// Every trusted audit key in the token, ordered by CKA_ID.
std::vector<AuditKey> find_audit_keys(hsm::Session& session);
// The trusted audit key whose CKA_ID is `id_hex` (either case), if present.
std::optional<AuditKey> find_audit_key(hsm::Session& session, std::string_view id_hex);
// The audit key to seal with: the one with the smallest CKA_ID if any exists (two
// writers racing to create one end up with two keys; each seal names its own), else a
// new one generated in the token with a random CKA_ID.
AuditKey find_or_create_audit_key(hsm::Session& session);

// A Sealer for AuditLog: finds or creates the audit key now, then MACs through the
// gateway's maintenance lane (the key's handle is kept per module generation and looked
// up again by CKA_ID after a restart or when it went stale), with the token's anchors
// (AnchorStore::on_gateway). The gateway must outlive the sealer.
Sealer token_sealer(TokenGateway& gateway);

// A KeyedHmac (audit_log.h) for verify(): computed in the token under the audit key
// with that CKA_ID; std::nullopt if the token has no such key. Throws hsm::Error.
KeyedHmac token_keyed_hmac(TokenGateway& gateway);

// Everything verify() asks of the token (audit_verify.h): seals, anchors and pending
// marks through `gateway`, this host, `config`'s anchor retention and the wall clock.
TokenView token_view(TokenGateway& gateway, const AuditConfig& config);

}  // namespace keysvc::audit
