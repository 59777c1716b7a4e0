// The small text format of keysvc's data objects and anchors: a magic first line naming
// the format and its version, then one "key=value" line per field.
//
//   keysvc-generation v3
//   created=1700000000
//   ...
#pragma once

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace keysvc {

using KeyValueLines = std::vector<std::pair<std::string_view, std::string_view>>;

// The key/value lines of `text`, in order (a key may repeat), as views into `text`;
// std::nullopt if its first line is not exactly `magic` (another format or version) or a
// line has no '='.
std::optional<KeyValueLines> key_value_lines(std::string_view text, std::string_view magic);

}  // namespace keysvc
