// A generation's schedule, and the one rule every server applies to pick the key that
// encrypts new tickets. Ticket key selection and lifetimes live in this file and in
// rotation.h, nowhere else.
//
// Times are Unix seconds (UTC). A generation is
//   published     from `created` on: every server that has loaded it decrypts with it;
//   pending       while now < encrypt_from;
//   active        when it is the encrypt generation (see choose_encrypt_generation);
//   decrypt-only  after its encrypt window, while now < decrypt_until;
//   expired       from decrypt_until on (destroyed by the rotator after clock_skew);
//   revoked       once a revocation record names it: never used again, destroyed;
//   refused       its keys or record are not what keysvc makes (key_custody.h): never used.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

namespace keysvc {

struct Schedule {
  std::int64_t created = 0;
  std::int64_t encrypt_from = 0;
  std::int64_t encrypt_until = 0;
  std::int64_t decrypt_until = 0;

  bool operator==(const Schedule&) const = default;
};

enum class GenerationState { kPending, kActive, kDecryptOnly, kExpired, kRevoked, kRefused };
std::string_view to_string(GenerationState state);

// How generations are laid out in time; the [rotation] section of the config.
struct RotationPolicy {
  // How long each generation encrypts new tickets.
  std::chrono::seconds encrypt_period{std::chrono::hours(1)};
  // A new generation exists at least this long before it starts encrypting, so every
  // server has loaded it by then. Must exceed refresh_interval + clock_skew.
  std::chrono::seconds publish_lead{std::chrono::minutes(10)};
  // How long a generation keeps decrypting after its encrypt window; at least the
  // ticket lifetime, so every ticket it issued stays valid for its whole lifetime.
  std::chrono::seconds decrypt_window{std::chrono::hours(2)};
  // The largest difference between two servers' clocks that must not cost a resumption.
  std::chrono::seconds clock_skew{std::chrono::seconds(30)};
  // Servers rescan the token this often (and at most this often on unknown key names).
  std::chrono::seconds refresh_interval{std::chrono::seconds(30)};
  // Single node: the server runs the rotator itself on every refresh.
  bool self_rotate = true;
  // Custody opt-in: keys of generations made under this policy are COPYABLE and
  // MODIFIABLE, so servers may derive with session copies (config.h, hsm/secret_key.h).
  bool copyable_keys = false;
  // The tier of generations made under this policy (derivation.h). kEpoch (the
  // default): the token derives one key per generation and epoch, per-ticket keys come
  // from it in process. kStrict: one HSM operation per ticket, by `derivation`.
  enum class Tier { kEpoch, kStrict };
  Tier tier = Tier::kEpoch;
  // The epoch tier's epoch length, recorded in each generation (fleet-wide by
  // construction); a whole divisor of encrypt_period (config.h).
  std::chrono::seconds epoch{std::chrono::minutes(5)};
  // The strict tier's per-ticket derivation: 1 = two HMAC-SHA256 with two keys, 2 = one
  // HMAC-SHA512 with one 64-byte key.
  int derivation = 1;
};

}  // namespace keysvc
