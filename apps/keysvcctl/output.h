// Output helpers for keysvcctl: JSON, aligned text tables, timestamps.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <iosfwd>
#include <utility>
#include <string>
#include <vector>

#include "keysvc/hsm/secret_key.h"
#include "keysvc/schedule.h"

namespace keysvcctl {

// JSON output (nlohmann-json): objects keep their members in insertion order.
using Json = nlohmann::ordered_json;

// Pretty-printed (two-space indent) / on one line (for JSON Lines output); no trailing
// newline. Bytes that are not UTF-8 (a file name given on the command line) are written
// as U+FFFD instead of failing.
std::string dump_pretty(const Json& j);
std::string dump_line(const Json& j);

// Unix seconds as UTC ISO-8601, "2024-05-01T10:00:00Z".
std::string iso8601_utc(std::int64_t unix_seconds);

// Appends a schedule's times to an object: created, encrypt_from, encrypt_until and
// decrypt_until as ISO-8601, each followed by its *_unix twin.
void add_schedule(Json& object, const keysvc::Schedule& s);

// An aligned text table: a header row and rows of cells, two spaces between columns.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Key attributes as a JSON object (every attribute, plus held_in_token and
// enforced_by_token; copyable is null on a token without CKA_COPYABLE).
Json custody_json(const keysvc::hsm::KeyCustody& c);
// A short human summary: "sensitive, never-extractable, sign only" when the key is
// held in the token; otherwise names what is wrong ("EXTRACTABLE, NOT sensitive...");
// says so when the token does not enforce them.
std::string custody_summary(const keysvc::hsm::KeyCustody& c);

}  // namespace keysvcctl
