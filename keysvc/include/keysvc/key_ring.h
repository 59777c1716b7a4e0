// The ticket key ring: every generation in the token, as one immutable snapshot.
//
// A generation is a key name plus two token keys that share it as CKA_ID: the
// encryption key (per-ticket AES keys are derived from it) and the MAC key (per-ticket
// HMAC keys). A ring is replaced whole when the token is rescanned, so a handshake
// holding a snapshot never sees it change.
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <vector>

#include "keysvc/key_name.h"

namespace keysvc {

struct Generation {
  KeyName name{};
  CK_OBJECT_HANDLE enc_key = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE mac_key = CK_INVALID_HANDLE;
  std::int64_t created = 0;  // Unix seconds, from the generation's record in the token
};

class KeyRing {
 public:
  KeyRing() = default;
  // Sorts by creation time (then name, so that every server orders ties alike).
  explicit KeyRing(std::vector<Generation> generations);

  const std::vector<Generation>& generations() const noexcept { return generations_; }
  bool empty() const noexcept { return generations_.empty(); }

  // The generation called `name`, or nullptr.
  const Generation* find(const KeyName& name) const noexcept;

  // The generation new tickets are issued under: the newest one. nullptr if empty.
  const Generation* encrypt_generation() const noexcept;

 private:
  std::vector<Generation> generations_;
};

}  // namespace keysvc
