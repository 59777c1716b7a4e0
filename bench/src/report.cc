#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace keysvc::bench {

namespace {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // Nearest rank.
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string num(double v, int decimals = 3) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string opt_num(const std::optional<double>& v, int decimals = 3) { return v ? num(*v, decimals) : "null"; }

}  // namespace

CellResult summarise(const std::string& mode, const CellAccum& a, bool in_process) {
  CellResult r;
  r.mode = mode;
  r.handshakes = a.handshakes;
  r.failures = a.failures;
  r.not_resumed = a.not_resumed;
  r.error = a.first_error;
  if (a.handshakes == 0) {
    if (r.error.empty()) r.error = "no handshakes";
    return r;
  }
  const double n = static_cast<double>(a.handshakes);
  if (in_process) {
    // What the server threads sustain: each thread's handshakes over its server-side
    // wall time, summed over threads.
    for (const auto& [thread, hw] : a.per_thread)
      if (hw.second > 0) r.handshakes_per_s += hw.first / (hw.second / 1e9);
    r.client_us_per_handshake = a.client_wall_ns / n / 1e3;
  }
  if (a.elapsed_ns > 0) r.e2e_handshakes_per_s = n / (a.elapsed_ns / 1e9);
  if (!in_process) r.handshakes_per_s = r.e2e_handshakes_per_s;
  r.server_cpu_us_per_handshake = a.server_cpu_ns / n / 1e3;
  r.round_rates = a.round_rates;
  r.p50_us = percentile(a.latency_us, 50);
  r.p99_us = percentile(a.latency_us, 99);
  if (a.hsm_calls) r.hsm_calls_per_handshake = static_cast<double>(*a.hsm_calls) / n;
  if (a.pkcs11_calls) r.pkcs11_calls_per_handshake = static_cast<double>(*a.pkcs11_calls) / n;
  if (a.tickets) r.tickets_per_handshake = static_cast<double>(*a.tickets) / n;
  return r;
}

void add_ratios(Section& s) {
  auto find = [](const ScenarioResult& sc, const std::string& mode) -> const CellResult* {
    for (const auto& c : sc.cells)
      if (c.mode == mode && !c.skipped && c.handshakes_per_s > 0) return &c;
    return nullptr;
  };
  for (auto& sc : s.scenarios) {
    const CellResult* base = find(sc, "openssl");
    const CellResult* ref = s.baseline_mode.empty() ? nullptr : find(sc, s.baseline_mode);
    for (auto& c : sc.cells) {
      if (c.skipped || c.handshakes_per_s <= 0) continue;
      if (base != nullptr) c.ratio_to_openssl = c.handshakes_per_s / base->handshakes_per_s;
      if (base != nullptr && !c.round_rates.empty() && c.round_rates.size() == base->round_rates.size()) {
        std::vector<double> ratios;
        for (std::size_t i = 0; i < c.round_rates.size(); ++i)
          if (base->round_rates[i] > 0) ratios.push_back(c.round_rates[i] / base->round_rates[i]);
        if (!ratios.empty()) c.median_round_ratio_to_openssl = percentile(ratios, 50);
      }
      if (base != nullptr && c.server_cpu_us_per_handshake > 0)
        c.cpu_ratio_to_openssl = base->server_cpu_us_per_handshake / c.server_cpu_us_per_handshake;
      if (ref != nullptr) c.ratio_to_baseline = c.handshakes_per_s / ref->handshakes_per_s;
    }
  }
}

void print_section(const Section& s) {
  std::printf("\n== %s: %s\n", s.name.c_str(), s.description.c_str());
  if (s.skipped) {
    std::printf("   skipped: %s\n", s.reason.c_str());
    return;
  }
  std::printf("%-18s %-30s %10s %7s %9s %9s %9s %7s %7s %5s\n", "scenario", "mode", "hs/s", "ratio", "cpu_us/hs",
              "p50_us", "p99_us", "hsm/hs", "tix/hs", "fail");
  for (const auto& sc : s.scenarios) {
    for (const auto& c : sc.cells) {
      if (c.skipped) {
        std::printf("%-18s %-30s skipped: %s\n", sc.name.c_str(), c.mode.c_str(), c.reason.c_str());
        continue;
      }
      std::string hsm = c.hsm_calls_per_handshake ? num(*c.hsm_calls_per_handshake, 2) : "-";
      std::string ratio = c.ratio_to_openssl ? num(*c.ratio_to_openssl, 3) : "-";
      if (c.ratio_to_baseline) ratio += " (" + num(*c.ratio_to_baseline, 3) + " of " + s.baseline_mode + ")";
      if (c.median_round_ratio_to_openssl) ratio += " (median " + num(*c.median_round_ratio_to_openssl, 3) + ")";
      std::string tix = c.tickets_per_handshake ? num(*c.tickets_per_handshake, 2) : "-";
      std::printf("%-18s %-30s %10.0f %7s %9.1f %9.1f %9.1f %7s %7s %5llu%s%s\n", sc.name.c_str(), c.mode.c_str(),
                  c.handshakes_per_s, ratio.c_str(), c.server_cpu_us_per_handshake, c.p50_us, c.p99_us, hsm.c_str(),
                  tix.c_str(),
                  static_cast<unsigned long long>(c.failures + c.not_resumed), c.error.empty() ? "" : "  ",
                  c.error.c_str());
    }
  }
  for (const auto& m : s.memory)
    std::printf("server memory %-30s threads=%d  peak RSS %ld kB, RSS %ld kB\n", m.mode.c_str(), m.threads,
                m.peak_rss_kb, m.rss_kb);
  std::fflush(stdout);
}

std::string to_json(const JsonObject& machine, const JsonObject& parameters,
                    const std::vector<std::pair<std::string, std::string>>& mode_status,
                    const std::vector<Section>& sections) {
  std::ostringstream o;
  auto object = [&](const JsonObject& obj, const char* indent) {
    o << "{";
    bool first = true;
    for (const auto& [k, v] : obj) {
      o << (first ? "\n" : ",\n") << indent << "  " << quote(k) << ": " << (v.numeric ? v.text : quote(v.text));
      first = false;
    }
    o << "\n" << indent << "}";
  };
  o << "{\n  \"schema\": \"keysvc-bench/2\",\n  \"machine\": ";
  object(machine, "  ");
  o << ",\n  \"parameters\": ";
  object(parameters, "  ");
  o << ",\n  \"modes\": {";
  for (std::size_t i = 0; i < mode_status.size(); ++i) {
    const auto& [mode, reason] = mode_status[i];
    o << (i ? ",\n" : "\n") << "    " << quote(mode) << ": {\"status\": " << quote(reason.empty() ? "ok" : "skipped");
    if (!reason.empty()) o << ", \"reason\": " << quote(reason);
    o << "}";
  }
  o << "\n  },\n  \"sections\": {";
  for (std::size_t si = 0; si < sections.size(); ++si) {
    const auto& s = sections[si];
    o << (si ? ",\n" : "\n") << "    " << quote(s.name) << ": {\n      \"description\": " << quote(s.description);
    if (s.skipped) o << ",\n      \"skipped\": true,\n      \"reason\": " << quote(s.reason);
    if (!s.baseline_mode.empty()) o << ",\n      \"baseline_mode\": " << quote(s.baseline_mode);
    for (const auto& [key, text] : s.notes) o << ",\n      " << quote(key) << ": " << quote(text);
    o << ",\n      \"scenarios\": [";
    for (std::size_t i = 0; i < s.scenarios.size(); ++i) {
      const auto& sc = s.scenarios[i];
      o << (i ? ",\n" : "\n") << "        {\"scenario\": " << quote(sc.name) << ", \"tls\": " << quote(sc.tls)
        << ", \"handshake\": " << quote(sc.kind) << ", \"server_threads\": " << sc.threads << ", \"modes\": {";
      for (std::size_t j = 0; j < sc.cells.size(); ++j) {
        const auto& c = sc.cells[j];
        o << (j ? "," : "") << "\n          " << quote(c.mode) << ": {";
        if (c.skipped) {
          o << "\"skipped\": true, \"reason\": " << quote(c.reason) << "}";
          continue;
        }
        o << "\"handshakes\": " << c.handshakes << ", \"failures\": " << c.failures
          << ", \"not_resumed\": " << c.not_resumed << ", \"handshakes_per_s\": " << num(c.handshakes_per_s, 1)
          << ", \"e2e_handshakes_per_s\": " << num(c.e2e_handshakes_per_s, 1)
          << ", \"server_cpu_us_per_handshake\": " << num(c.server_cpu_us_per_handshake, 2)
          << ", \"p50_us\": " << num(c.p50_us, 1) << ", \"p99_us\": " << num(c.p99_us, 1)
          << ", \"hsm_calls_per_handshake\": " << opt_num(c.hsm_calls_per_handshake, 3)
          << ", \"ratio_to_openssl\": " << opt_num(c.ratio_to_openssl, 4)
          << ", \"cpu_ratio_to_openssl\": " << opt_num(c.cpu_ratio_to_openssl, 4);
        if (!s.baseline_mode.empty()) o << ", \"ratio_to_baseline\": " << opt_num(c.ratio_to_baseline, 4);
        if (s.name == "inprocess")
          o << ", \"median_round_ratio_to_openssl\": " << opt_num(c.median_round_ratio_to_openssl, 4)
            << ", \"client_us_per_handshake\": " << num(c.client_us_per_handshake, 2)
            << ", \"tickets_per_handshake\": " << opt_num(c.tickets_per_handshake, 3)
            << ", \"pkcs11_calls_per_handshake\": " << opt_num(c.pkcs11_calls_per_handshake, 4);
        if (!c.error.empty()) o << ", \"error\": " << quote(c.error);
        o << "}";
      }
      o << "\n        }}";
    }
    o << "\n      ]";
    if (!s.memory.empty()) {
      o << ",\n      \"server_memory\": [";
      for (std::size_t i = 0; i < s.memory.size(); ++i)
        o << (i ? ",\n" : "\n") << "        {\"mode\": " << quote(s.memory[i].mode)
          << ", \"server_threads\": " << s.memory[i].threads << ", \"peak_rss_kb\": " << s.memory[i].peak_rss_kb
          << ", \"rss_kb\": " << s.memory[i].rss_kb << "}";
      o << "\n      ]";
    }
    o << "\n    }";
  }
  o << "\n  }\n}\n";
  return o.str();
}

}  // namespace keysvc::bench
