#include "audit_record.h"

#include "keysvc/audit_anchor.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace keysvc::audit {

namespace detail {

namespace {

using nlohmann::json;

// The writer nests four deep (record > keys > name > rejected); anything deeper is not
// one of its lines, and stopping there keeps hostile lines from building deep trees.
constexpr int kMaxDepth = 8;
constexpr std::size_t kMaxLine = std::size_t{1} << 20;

std::optional<std::int64_t> days_from_civil(int y, unsigned m, unsigned d) {
  if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = static_cast<int>(m) - 1;
  tm.tm_mday = static_cast<int>(d);
  std::time_t t = ::timegm(&tm);
  if (tm.tm_mday != static_cast<int>(d)) return std::nullopt;  // e.g. 02-31
  return static_cast<std::int64_t>(t) / 86400;
}

// Fixed-width digits at s[pos, pos+n).
std::optional<int> digits(std::string_view s, std::size_t pos, std::size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (std::size_t k = pos; k < pos + n; ++k) {
    if (s[k] < '0' || s[k] > '9') return std::nullopt;
    v = v * 10 + (s[k] - '0');
  }
  return v;
}

}  // namespace

const std::string* Record::string_field(std::string_view key) const {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
}

std::optional<std::uint64_t> Record::uint_field(std::string_view key) const { return uint_member(obj, key); }

std::optional<std::uint64_t> uint_member(const json& object, std::string_view key) {
  if (!object.is_object()) return std::nullopt;
  auto it = object.find(key);
  if (it == object.end() || !it->is_number_unsigned()) return std::nullopt;
  return it->get<std::uint64_t>();
}

std::optional<Record> parse_record(std::string_view line) {
  // The writer puts nothing around the object: whitespace there is an edit the JSON
  // grammar would forgive.
  if (line.size() > kMaxLine || line.size() < 2 || line.front() != '{' || line.back() != '}') return std::nullopt;
  bool too_deep = false;
  json::parser_callback_t limit = [&too_deep](int depth, json::parse_event_t, json&) {
    if (depth > kMaxDepth) too_deep = true;
    return !too_deep;  // discarded values are not kept: memory stays bounded
  };
  json v = json::parse(line.begin(), line.end(), limit, /*allow_exceptions=*/false);
  if (too_deep || !v.is_object()) return std::nullopt;
  Record r;
  r.obj = std::move(v);
  auto seq = r.uint_field("seq");
  const std::string* ts = r.string_field("ts");
  const std::string* event = r.string_field("event");
  const std::string* prev = r.string_field("prev");
  if (!seq || *seq == 0 || !ts || !event || !prev) return std::nullopt;
  auto t = parse_iso(*ts, false);
  auto p = hash_from_hex(*prev);
  if (!t || !p) return std::nullopt;
  r.seq = *seq;
  r.ts = *t;
  r.event = *event;
  r.prev = *p;
  return r;
}

std::optional<Hash> hash_from_hex(std::string_view h) {
  if (h.size() != 64) return std::nullopt;
  Hash out{};
  for (std::size_t k = 0; k < 64; ++k) {
    char c = h[k];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;  // lowercase only
    if (d < 0) return std::nullopt;
    out[k / 2] = static_cast<std::uint8_t>(k % 2 ? (out[k / 2] | d) : d << 4);
  }
  return out;
}

std::optional<std::int64_t> parse_iso(std::string_view s, bool date_alone_ok) {
  auto y = digits(s, 0, 4), mo = digits(s, 5, 2), d = digits(s, 8, 2);
  if (!y || !mo || !d || s[4] != '-' || s[7] != '-') return std::nullopt;
  auto days = days_from_civil(*y, static_cast<unsigned>(*mo), static_cast<unsigned>(*d));
  if (!days) return std::nullopt;
  std::int64_t ms = *days * 86400000;
  if (s.size() == 10) return date_alone_ok ? std::optional<std::int64_t>(ms) : std::nullopt;
  auto h = digits(s, 11, 2), mi = digits(s, 14, 2), se = digits(s, 17, 2);
  if (s.size() < 20 || s[10] != 'T' || !h || !mi || !se || s[13] != ':' || s[16] != ':' || *h > 23 || *mi > 59 ||
      *se > 60)
    return std::nullopt;
  ms += ((*h * 60 + *mi) * 60 + *se) * std::int64_t{1000};
  std::size_t p = 19;
  if (s[p] == '.') {
    auto frac = digits(s, 20, 3);
    if (!frac) return std::nullopt;
    ms += *frac;
    p = 23;
  }
  if (p + 1 != s.size() || s[p] != 'Z') return std::nullopt;
  return ms;
}

std::vector<Line> split(const std::vector<LogText>& files, bool parse_all) {
  std::vector<Line> lines;
  for (std::size_t f = 0; f < files.size(); ++f) {
    std::string_view text = files[f].second;
    std::size_t start = 0, number = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      Line l;
      l.file = f;
      l.number = ++number;
      l.terminated = end != std::string_view::npos;
      l.raw = text.substr(start, l.terminated ? end - start : std::string_view::npos);
      if (parse_all) {
        l.hash = sha256(l.raw);
        l.rec = parse_record(l.raw);
        // verify reads more than the common fields of these two only; the others' trees
        // would hold about ten times the file's size.
        if (l.rec && l.rec->event != "seal" && l.rec->event != "chain_start") l.rec->obj = nlohmann::json();
      }
      const bool terminated = l.terminated;
      lines.push_back(std::move(l));
      if (!terminated) break;
      start = end + 1;
    }
  }
  return lines;
}

Hash region_hash(const std::vector<Line>& lines, std::size_t from, std::size_t to) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  for (std::size_t k = from; ok && k < to && k < lines.size(); ++k)
    ok = EVP_DigestUpdate(ctx.get(), lines[k].raw.data(), lines[k].raw.size()) == 1 &&
         EVP_DigestUpdate(ctx.get(), "\n", 1) == 1;
  Hash h{};
  unsigned int n = 0;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), h.data(), &n) != 1) throw std::runtime_error("SHA-256 failed");
  return h;
}

std::optional<ChainId> chain_of(const Record& rec) {
  const std::string* c = rec.string_field("chain");
  return c ? chain_id_from_hex(*c) : std::nullopt;
}

std::string printable(std::string_view s, std::size_t max) {
  std::string out(s.substr(0, max));
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  return out;
}

SealCheck check_seal(const std::vector<Line>& lines, std::size_t i, std::size_t lowest,
                     const std::optional<ChainId>& chain, const KeyedHmac& hmac) {
  const Record& rec = *lines[i].rec;
  SealCheck c;
  const std::string* head = rec.string_field("head");
  const std::string* mac = rec.string_field("mac");
  const std::string* key = rec.string_field("key");
  auto head_hash = head ? hash_from_hex(*head) : std::nullopt;
  auto mac_value = mac ? hash_from_hex(*mac) : std::nullopt;
  if (!head_hash || !mac_value || !key) {
    c.detail = "seal without head, mac or key";
    return c;
  }
  // v3 seals name their chain; v2 seals name the record they cover ("sealed"), which
  // records appended while the token computed the MAC may separate from the seal; v1
  // seals cover their prev.
  const bool v3 = rec.obj.contains("chain");
  const bool v2 = rec.obj.contains("sealed");
  const std::optional<ChainId> seal_chain = chain_of(rec);
  if (v3 && !seal_chain) {
    c.detail = "the seal's chain is not a chain id";
    return c;
  }
  if (chain && (!v3 || *seal_chain != *chain)) {
    c.detail = v3 ? "the seal names chain " + to_hex(*seal_chain) + ", not its segment's " + to_hex(*chain)
                  : "a seal without a chain in chain " + to_hex(*chain);
    return c;
  }
  if (!chain && v3) {
    c.detail = "a seal of chain " + to_hex(*seal_chain) + " without its chain_start";
    return c;
  }
  const std::optional<std::uint64_t> sealed = rec.uint_field("sealed");
  if ((v2 || v3) && !sealed) {
    c.detail = "the seal's sealed is not a seq";
    return c;
  }
  c.covered_seq = (v2 || v3) ? *sealed : rec.seq - 1;
  std::optional<std::size_t> covered;
  for (std::size_t j = i; j-- > lowest && lines[j].rec && lines[j].rec->seq >= c.covered_seq;)
    if (lines[j].rec->seq == c.covered_seq) covered = j;
  if (!covered || lines[*covered].hash != *head_hash) {
    c.detail = (v2 || v3) ? "the seal's head is not the hash of the record it names" : "the seal's head is not its prev";
    return c;
  }
  if (hmac) {
    auto expected = hmac(*key, v3   ? seal_message_v3(*seal_chain, c.covered_seq, *head_hash)
                               : v2 ? seal_message_v2(c.covered_seq, *head_hash)
                                    : seal_message(rec.seq, *head_hash));
    if (!expected) {
      c.detail = "the token has no audit key " + printable(*key, 64);
      return c;
    }
    if (*expected != *mac_value) {
      c.detail = "the seal's MAC does not verify";
      return c;
    }
  }
  c.ok = true;
  c.covered = *covered;
  return c;
}

}  // namespace detail

std::optional<std::string> read_log_file(const std::string& path, std::string& error) {
  auto os_error = [&error] {
    error = std::error_code(errno, std::generic_category()).message();
    return std::nullopt;
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return os_error();
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      return os_error();
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

std::optional<std::int64_t> parse_time(std::string_view text) {
  if (text.empty() || text.size() > 40) return std::nullopt;
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (text.size() > 12) return std::nullopt;
    std::int64_t s = 0;
    for (char c : text) s = s * 10 + (c - '0');
    return s * 1000;
  }
  return detail::parse_iso(text, true);
}

}  // namespace keysvc::audit
