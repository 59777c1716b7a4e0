#include "doctor_tiers.h"

#include <cstdio>
#include <string>

namespace keysvcctl {

namespace {
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v >= 100 ? "%.0f" : "%.1f", v);
  return buf;
}
}  // namespace

void add_tier_findings(const keysvc::Config& config, const keysvc::hsm::ModuleProfile& profile, double hmac_us,
                       double keygen_us, double find_us, double data_us, std::vector<Finding>& out) {
  if (hmac_us > 0) {
    const double per_ticket = config.rotation.derivation == 2 ? 1 : 2;
    const double hmacs_per_s = 1e6 / hmac_us;
    const double resumptions = hmacs_per_s / per_ticket;
    const double full = hmacs_per_s / (per_ticket * static_cast<double>(config.tickets.per_handshake));
    out.push_back({"tiers", "ticket path", Verdict::kInfo,
                   num(hmacs_per_s) + " HMAC/s per session: " + num(resumptions) + " resumptions/s or " + num(full) +
                       " full handshakes/s (" + std::to_string(config.tickets.per_handshake) +
                       " tickets each); at most " + std::to_string(config.hsm.sessions) + " times that with hsm.sessions = " +
                       std::to_string(config.hsm.sessions) + " if the token serves sessions in parallel",
                   0, 0});
  }
  if (find_us > 0) {
    const double per_scan = 1 + 3 * 3;
    const double scans = 3600.0 / static_cast<double>(config.rotation.refresh_interval.count());
    out.push_back({"tiers", "rescans", Verdict::kInfo,
                   num(scans * per_scan) + " HSM operations/hour per server (every " +
                       std::to_string(config.rotation.refresh_interval.count()) + " s), about " +
                       num(scans * per_scan * find_us / 1e6) + " s of HSM time/hour" +
                       (profile.rescan_needs_reinitialize ? ", plus a module re-initialise per scan" : ""),
                   0, 0});
  }
  if (keygen_us > 0) {
    const double per_hour = 3600.0 / static_cast<double>(config.rotation.encrypt_period.count());
    const double us = 2 * keygen_us + data_us;
    out.push_back({"tiers", "rotation", Verdict::kInfo,
                   num(per_hour * 3) + " HSM operations/hour (a generation every " +
                       std::to_string(config.rotation.encrypt_period.count()) + " s), " + num(us / 1000) +
                       " ms per generation",
                   0, 0});
  }
}

}  // namespace keysvcctl
