#include "key_value_text.h"

namespace keysvc {

std::optional<KeyValueLines> key_value_lines(std::string_view text, std::string_view magic) {
  auto end = text.find('\n');
  if (end == std::string_view::npos || text.substr(0, end) != magic) return std::nullopt;
  text.remove_prefix(end + 1);
  KeyValueLines out;
  while (!text.empty()) {
    end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    auto eq = line.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    out.emplace_back(line.substr(0, eq), line.substr(eq + 1));
  }
  return out;
}

}  // namespace keysvc
