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
// and always replaced: ticket_adapter.cc).
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
