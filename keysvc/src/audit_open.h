// How a writer continues a file it (re)opens (audit_log.h, "Chains and anchors"): what
// it accepts of the lines already there, and what its first record says.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "audit_record.h"
#include "keysvc/audit_anchor.h"

namespace keysvc::audit::detail {

// Lines a writer found and did not accept (chain_start's "found").
struct Found {
  std::string reason;  // "unsealed", "truncated", "deleted", "foreign"
  std::uint64_t lines = 0, bytes = 0;
  Hash sha256{};                               // region_hash() of those lines
  std::uint64_t first_seq = 0, last_seq = 0;   // of the records among them (0: none)
  std::optional<std::uint64_t> expected_seq;   // truncated / deleted: what the token named
  std::optional<Hash> expected_hash;
};

// Lines a writer accepted without an anchor (chain_start's "unanchored").
struct Unanchored {
  std::uint64_t lines = 0, last_seq = 0, seals = 0, vouched = 0;
};

struct OpenPlan {
  // Where new records chain from (the last line accepted; seq 0 and zeros: nothing).
  std::uint64_t seq = 0;
  Hash prev{};
  std::int64_t last_ts = 0;
  std::uint64_t file_bytes = 0;  // the file's size as found
  bool add_newline = false;      // it ends inside a line: terminate that line first
  // The first record: a chain_start (a new chain, or a new segment) or reopened.
  bool chain_start = true;
  std::uint64_t chain_start_seq = 0;  // seq of that chain_start (may skip what the token named)
  std::optional<Found> found;
  std::optional<Unanchored> unanchored;
  std::uint64_t anchored = 0, verified = 0, vouched = 0;  // reopened's fields
  // With the token: the chain and its anchor as they stand (store_anchor: write it once
  // the first record is in the file; starts_file: a new chain in this file, whose
  // chain_start is anchor.first).
  ChainId chain{};
  std::optional<Anchor> anchor;
  bool store_anchor = false;
  bool starts_file = false;
  bool new_chain = false;       // no anchor was there: sweep old ones
  bool clear_pending = false;   // the slot's pending mark is used or stale: remove it after the first seal
};

// With the token: `state` is the slot's anchor and pending mark, `check` verifies seals
// found in the file. Reads the file (from the anchored seal on when the anchor's offset
// finds it). Throws std::runtime_error if the file exists but cannot be read, and what
// `check` throws.
OpenPlan plan_open(const std::string& path, const SlotState& state, const KeyedHmac& check);

// Without the token: continue after the file's last line (a chain_start if it is empty).
OpenPlan plan_tokenless(const std::string& path);

}  // namespace keysvc::audit::detail
