// Ticket key selection, lifetimes and renewal: every rule in one place.
//
// Times are Unix seconds (UTC). A generation (key_ring.h) has a schedule (schedule.h):
//   published     from `created` on: every server that has loaded it decrypts with it;
//   pending       while now < encrypt_from;
//   active        while it is the encrypt generation (below);
//   decrypt-only  after its encrypt window, while now < decrypt_until;
//   expired       from decrypt_until on (destroyed by the rotator after clock_skew);
//   revoked       once a revocation record names it: never used again, destroyed.
//
// Issuing. New tickets go under the encrypt generation: of the usable generations whose
// encrypt window has begun and that have not expired, the one whose window began last;
// ties (two rotators racing for one window) go to the smallest name. A generation thus
// keeps encrypting past encrypt_until only if no newer one exists (the rotator is late).
// Every server applies this rule to the same token contents, so servers whose clocks
// agree pick the same key, and ones that disagree by less than clock_skew still open
// each other's tickets (a generation is published publish_lead before it encrypts).
//
// Opening. A ticket opens while its generation is usable and now < decrypt_until +
// clock_skew, and its original full handshake is younger than tickets.max_session_age
// (carried in the ticket, so renewal never extends it). An opened ticket is renewed when
// its generation is older than the encrypt generation (TLS 1.3 tickets are single-use
// and always replaced: ticket_callbacks.cc).
//
// Epochs (the epoch tier, derivation 3: derivation.h). Time is cut into epochs of the
// generation's epoch_seconds, epoch e covering [e * epoch_seconds, (e + 1) * epoch_seconds)
// in Unix seconds, the same for every server. A ticket is issued under the epoch of the
// issuing server's clock, and its IV names that epoch. It opens only if that epoch
//   - has begun by now + clock_skew (no ticket from the future),
//   - ended no longer ago than the ticket lifetime + clock_skew (no ticket older than its
//     lifetime: refused without an HSM call),
//   - lies between the generation's encrypt_from - clock_skew and decrypt_until + clock_skew;
// so a server holds at most ceil((lifetime + 2 x clock_skew) / epoch) + 1 epoch keys per
// generation (lifetime / epoch + 2 when the epoch divides the lifetime and exceeds twice
// the skew). The maintenance thread derives the keys of the current and the next epoch of
// the encrypt generation (and of the generation encrypting clock_skew from now) ahead of
// time, so issuing never waits for the HSM.
//
// Rotation (the plan is a pure function of the ring, the clock and the policy):
//   1. If no generation encrypts now (empty token, or the rotator was down for longer
//      than the ring covers), create one whose window starts now. This is the only
//      generation not published ahead of use; servers find it by their on-demand
//      rescan of unknown key names.
//   2. While the ring's coverage (the latest encrypt_until) ends less than
//      2 x publish_lead from now, create the next generation: encrypt window
//      [end, end + encrypt_period), decrypt until encrypt_until + decrypt_window.
//      Run the rotator at least every publish_lead and each new generation is in the
//      token for at least publish_lead before it encrypts.
//   3. Destroy generations and revocation records whose decrypt_until + clock_skew
//      has passed.
//   4. Two rotators racing may both create a generation for the same window. Every
//      server picks the same one (smallest name); the next run destroys the others
//      while they are still pending. A duplicate whose window has begun is left to
//      expire: a server that loaded it before the winner existed may have issued under it.
// Creating is idempotent: running the rotator again at once creates nothing.
//
// Trusting a scan. A scan that sees every live generation vanish at once, leaving no
// usable generation at all, is an outage (an unreadable token folder, a token that
// answers with nothing), not a newer truth: the ring store keeps the last good ring and
// the rotator creates nothing. (New generations replacing all the old ones are believed:
// the token was read.)
#pragma once

#include <cstdint>
#include <vector>

#include "keysvc/key_ring.h"
#include "keysvc/schedule.h"

namespace keysvc {

// Whether a ticket under `g` may be opened at `now`, allowing `skew` seconds of clock
// difference: g is usable and now < decrypt_until + skew. (Also KeyRing::decrypts.)
bool ticket_opens(const Generation& g, std::int64_t now, std::int64_t skew) noexcept;

// Whether a ticket opened under `opened` should be replaced by one under the encrypt
// generation: `opened` is older than it. A newer one (a server whose clock runs ahead
// already switched) is left alone.
bool ticket_renews(const KeyRing& ring, const Generation& opened, std::int64_t now) noexcept;

// Whether a session first authenticated at `auth_time` may still resume at `now`.
bool session_young_enough(std::int64_t auth_time, std::int64_t now, std::int64_t max_session_age) noexcept;

// The epoch `unix_seconds` falls in, for epochs of `epoch_seconds` (> 0).
std::int64_t epoch_of(std::int64_t unix_seconds, std::int64_t epoch_seconds) noexcept;

// A range of epochs, [first, last]; empty when last < first.
struct EpochRange {
  std::int64_t first = 0;
  std::int64_t last = -1;
  bool contains(std::int64_t e) const noexcept { return first <= e && e <= last; }
  std::int64_t size() const noexcept { return last < first ? 0 : last - first + 1; }
};
// The epochs a ticket under `g` (epoch tier) may come from at `now` (see "Epochs").
EpochRange ticket_epochs(const Generation& g, std::int64_t now, std::int64_t lifetime, std::int64_t skew) noexcept;

// What the epoch a ticket under `g` names says at `now`: it opens (within
// ticket_epochs), it is older than the ticket lifetime (an expired ticket of a real
// epoch), or it cannot be keysvc's (from the future, or from before `g` encrypted: a
// forged or corrupted IV). The last two are refused without an HSM call.
enum class TicketEpoch { kOpens, kTooOld, kImpossible };
TicketEpoch check_ticket_epoch(const Generation& g, std::int64_t epoch, std::int64_t now, std::int64_t lifetime,
                               std::int64_t skew) noexcept;

// The epochs of `g` whose keys a server keeps at `now`: those tickets may come from
// (ticket_epochs), and the next one, prepared ahead (epochs_to_prepare). Every other key
// of `g`, and every key of a generation whose tickets no longer open, is wiped.
EpochRange epochs_to_keep(const Generation& g, std::int64_t now, std::int64_t lifetime, std::int64_t skew) noexcept;

// The (generation, epoch) pairs whose keys should be ready at `now` (see "Epochs"), each
// once; empty when no epoch-tier generation encrypts.
struct EpochToPrepare {
  const Generation* generation = nullptr;
  std::int64_t epoch = 0;
};
std::vector<EpochToPrepare> epochs_to_prepare(const KeyRing& ring, std::int64_t now, std::int64_t skew);

struct RotationPlan {
  std::vector<Schedule> create;
  std::vector<KeyName> destroy;           // expired generations and losers of a race
  std::vector<KeyName> drop_revocations;  // revocation records no longer needed
  bool empty() const { return create.empty() && destroy.empty() && drop_revocations.empty(); }
};
RotationPlan plan_rotation(const KeyRing& ring, std::int64_t now, const RotationPolicy& policy);

// The schedule of a generation made by hand (`keysvcctl keys generate`, a revocation's
// replacement) that must encrypt at once: its window starts now, or one second after the
// current encrypt generation's began if that is later (a tie in encrypt_from would go to
// the smaller name, so the new one might not take over), and lasts one encrypt_period.
Schedule schedule_encrypting_now(const KeyRing& ring, std::int64_t now, const RotationPolicy& policy);

// Whether `after` (a fresh scan) has no usable generation and lost every generation of
// `before` that was still live at `now` (usable and not expired), with at least one such
// generation: see "Trusting a scan".
bool scan_lost_every_generation(const KeyRing& before, const KeyRing& after, std::int64_t now) noexcept;

}  // namespace keysvc
