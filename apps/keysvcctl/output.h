// Output helpers for keysvcctl: a small JSON value, aligned text tables, timestamps.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "keysvc/hsm/secret_key.h"
#include "keysvc/schedule.h"

namespace keysvcctl {

// A JSON value. Objects keep their members in insertion order.
class Json {
 public:
  using Object = std::vector<std::pair<std::string, Json>>;
  using Array = std::vector<Json>;

  Json() = default;  // null
  Json(bool v) : v_(v) {}
  Json(int v) : v_(static_cast<std::int64_t>(v)) {}
  Json(std::int64_t v) : v_(v) {}
  Json(std::uint64_t v) : v_(static_cast<std::int64_t>(v)) {}
  Json(const char* v) : v_(std::string(v)) {}
  Json(std::string v) : v_(std::move(v)) {}
  Json(Object v) : v_(std::move(v)) {}
  Json(Array v) : v_(std::move(v)) {}

  // Appends a member (this must be an object) / an element (an array).
  Json& set(std::string key, Json value);
  Json& push(Json value);

  // Pretty-printed, two-space indent, no trailing newline.
  std::string dump() const;
  // On one line (for JSON Lines output), no trailing newline.
  std::string dump_line() const;

 private:
  void dump(std::string& out, int indent, bool compact) const;
  std::variant<std::nullptr_t, bool, std::int64_t, std::string, Object, Array> v_{nullptr};
};

std::string json_escape(const std::string& s);

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
