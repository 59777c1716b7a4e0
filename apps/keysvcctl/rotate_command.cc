// rotate (also "keys rotate"): run the rotator (keysvc/rotation.h) once, or every
// DURATION until SIGTERM / SIGINT.
#include <signal.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <iostream>
#include <memory>
#include <optional>

#include "cli.h"
#include "key_supply.h"
#include "lifecycle.h"
#include "keysvc/hsm/login_policy.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/rescan.h"
#include "keysvc/key_name.h"
#include "keysvc/rotation.h"
#include "keysvc/token_store.h"
#include "keysvc/ticket_key_service.h"
#include "output.h"

namespace keysvcctl {

namespace {

namespace hsm = keysvc::hsm;

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// SIGTERM and SIGINT set g_stop_signal. No SA_RESTART: a sleep is cut short.
void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

// Sleeps `period` in steps of at most 100 ms; returns early once a stop signal came.
void sleep_unless_stopped(std::chrono::seconds period) {
  const auto until = std::chrono::steady_clock::now() + period;
  while (!g_stop_signal) {
    auto left = until - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return;
    auto step = std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(100));
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(step).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    ::nanosleep(&ts, nullptr);  // EINTR on a signal: the loop checks the flag
  }
}

// Errors after which retrying would only repeat a wrong PIN (and may lock the token).
bool is_pin_error(const hsm::Pkcs11Error& e) { return hsm::LoginPolicy::is_pin_refusal(e.rv()); }

Json result_json(const keysvc::RotationResult& r, std::int64_t now) {
  Json j;
  j["now"] = iso8601_utc(now);
  j["now_unix"] = now;
  Json created = Json::array();
  for (const auto& g : r.created) {
    Json c;
    c["name"] = keysvc::to_hex(g.name);
    add_schedule(c, g.schedule);
    created.push_back(std::move(c));
  }
  j["created"] = std::move(created);
  Json destroyed = Json::array();
  for (const auto& name : r.destroyed) destroyed.push_back(keysvc::to_hex(name));
  j["destroyed"] = std::move(destroyed);
  return j;
}

void print_text(const keysvc::RotationResult& r) {
  for (const auto& g : r.created)
    std::cout << "created " << keysvc::to_hex(g.name) << " encrypts " << iso8601_utc(g.schedule.encrypt_from)
              << " to " << iso8601_utc(g.schedule.encrypt_until) << ", decrypts until "
              << iso8601_utc(g.schedule.decrypt_until) << '\n';
  for (const auto& name : r.destroyed) std::cout << "destroyed " << keysvc::to_hex(name) << '\n';
}

struct RotateOptions {
  bool json = false;
  std::string every;
};

// Runs the rotator; when it has something to do, records the changes in keysvcctl's
// audit trail (lifecycle.h) before returning. `last_good` (rotate --every: the previous
// run's ring) keeps an outage from being taken for an empty token (ticket_rules.h).
keysvc::RotationResult rotate_recorded(const keysvc::Config& config, keysvc::TokenGateway& gateway, std::int64_t now,
                                       std::shared_ptr<const keysvc::KeyRing> last_good = {}) {
  keysvc::KeyRing ring = gateway.call([rule = keysvc::custody_rule_of(config)](keysvc::hsm::Session& s) { return keysvc::token_store::load(s, rule); });
  const keysvc::RotationPlan plan = keysvc::plan_rotation(ring, now, config.rotation);
  auto reserved = reserve_keys(config, gateway.token(), plan.create.size());
  if (!config.audit.enabled() || plan.empty()) return keysvc::rotate(gateway, now, config.rotation, last_good);
  TokenChange change(config, gateway, now);
  keysvc::RotationResult r = keysvc::rotate(gateway, now, config.rotation, last_good);
  change.commit(now);
  return r;
}

int rotate_once(const Cli& cli, bool json) {
  keysvc::Config config;
  auto gateway = cli.open_gateway(&config);
  const std::int64_t now = unix_now();
  keysvc::RotationResult r = rotate_recorded(config, *gateway, now);
  if (json) {
    std::cout << dump_pretty(result_json(r, now)) << '\n';
  } else if (r.created.empty() && r.destroyed.empty()) {
    std::cout << "nothing to do\n";
  } else {
    print_text(r);
  }
  return kExitOk;
}

// The long-lived rotator. Text output: one line per change; --json: one JSON object
// per run, on one line. Token errors are logged on one line and retried next period,
// after a restart of the PKCS#11 module (below). It remembers the ring of its last good
// run, so an outage that shows an empty token creates nothing. It ends (exit 1) only if
// it cannot start (config, token, login) or the token refuses the PIN: a wrong PIN is
// not retried into a lockout.
int rotate_every(const Cli& cli, const std::string& every_text, bool json) {
  std::chrono::seconds period{};
  try {
    period = keysvc::parse_duration(every_text);
  } catch (const keysvc::ConfigError&) {
    // Not repeated: the value might be something secret typed in the wrong place.
    throw UsageError("--every needs a duration such as 90s, 5m or 1h");
  }
  if (period.count() <= 0) throw UsageError("--every must be at least 1s");

  keysvc::Config config;
  std::unique_ptr<keysvc::TokenGateway> gateway = cli.open_gateway(&config);
  install_stop_handlers();
  if (!json) std::cout << "rotating every " << every_text << " until SIGTERM or SIGINT" << std::endl;

  // After a failed run the module is restarted (C_Finalize + C_Initialize), so the next
  // run starts afresh: a network HSM's client module (p11-kit-client.so) never
  // reconnects by itself once its server went away, and SoftHSM keeps the token list of
  // its C_Initialize for good. keysvcctl is the module's only user here (the restart does
  // nothing otherwise), and a C_Initialize that fails now (the HSM still away) is tried
  // again after the next failed run.
  auto retry_later = [&](const char* what) {
    std::cerr << "keysvcctl: rotate: " << what << " (retrying in " << every_text << ")" << std::endl;
    gateway->request_module_restart();
    gateway->restart_module_if_requested();
  };

  std::shared_ptr<const keysvc::KeyRing> last_good;
  while (!g_stop_signal) {
    try {
      // A token that shows other processes' changes only after a re-initialise
      // (tpm2-pkcs11): the gateway restarts the module when the token changed, or the
      // run would plan on an old ring.
      gateway->prepare_for_scan();
      const std::int64_t now = unix_now();
      keysvc::RotationResult r = rotate_recorded(config, *gateway, now, last_good);
      last_good = std::make_shared<const keysvc::KeyRing>(
          gateway->call([rule = keysvc::custody_rule_of(config)](keysvc::hsm::Session& s) {
            return keysvc::token_store::load(s, rule);
          }));
      if (json) std::cout << dump_line(result_json(r, now)) << '\n';
      else print_text(r);
      std::cout.flush();
    } catch (const hsm::Pkcs11Error& e) {
      if (is_pin_error(e)) throw;
      retry_later(e.what());
    } catch (const std::exception& e) {
      retry_later(e.what());
    }
    sleep_unless_stopped(period);
  }
  if (!json) std::cout << "stopped by " << (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM") << std::endl;
  return kExitOk;
}

}  // namespace

void add_rotate_command(Cli& cli, CLI::App* parent) {
  auto o = std::make_shared<RotateOptions>();
  CLI::App* cmd = cli.add_command(
      "rotate",
      "Run the rotator: create the generations the schedule needs next ([rotation] in the config) and "
      "destroy expired ones; print what changed. Idempotent. Run it at least every rotation.publish_lead "
      "(a timer), or keep it running with --every",
      [&cli, o] { return o->every.empty() ? rotate_once(cli, o->json) : rotate_every(cli, o->every, o->json); },
      parent);
  cmd->add_option("--every", o->every,
                  "Keep running: rotate, sleep DURATION (90, 90s, 5m, 1h), repeat; exit 0 on SIGTERM or SIGINT. "
                  "Token errors are logged and retried next period")
      ->type_name("DURATION");
  cmd->add_flag("--json", o->json, "Print JSON instead of text (with --every: one JSON object per line and run)");
}

}  // namespace keysvcctl
