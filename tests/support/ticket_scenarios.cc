#include "ticket_scenarios.h"

#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_token.h"
#include "webserver_keysvc.h"
#include "worker_user.h"

namespace keysvc::test {

using namespace std::chrono_literals;

namespace {

std::string ca() { return localhost_cert().cert; }

// Tries to resume `sess` (each time from the same ticket, as a TLS 1.2 client may) until
// it works or `attempts` runs out. Returns the attempts used, or std::nullopt.
std::optional<int> resume_within(int port, TlsVersion v, const std::string& sess, int attempts, std::string& last) {
  for (int i = 1; i <= attempts; ++i) {
    Answer r = s_client_request(port, v, ca(), sess, "");
    last = r.detail;
    if (r.ok && r.reused) return i;
    std::this_thread::sleep_for(250ms);
  }
  return std::nullopt;
}

}  // namespace

void opens_the_token_in_each_worker_not_in_the_master(PreforkServer& server, std::size_t workers) {
  constexpr char kSoftHsmLibrary[] = "libsofthsm2.so";
  ASSERT_TRUE(server.wait_for_log(std::regex("keysvc: opened"), workers, 20s)) << server.error_log();
  EXPECT_FALSE(maps_file(server.master_pid(), kSoftHsmLibrary)) << "the master loaded SoftHSM";
  const auto pids = server.worker_pids();
  ASSERT_EQ(pids.size(), workers);
  std::set<std::string> opened_by;
  const std::string log = server.error_log();
  const std::regex opened(R"(keysvc: opened "[^"]+" in (?:worker|child) (\d+))");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), opened); it != std::sregex_iterator(); ++it) {
    opened_by.insert((*it)[1]);
  }
  for (pid_t w : pids) {
    EXPECT_TRUE(maps_file(w, kSoftHsmLibrary)) << "process " << w << " has not loaded SoftHSM";
    EXPECT_EQ(opened_by.count(std::to_string(w)), 1u) << log;
  }
  EXPECT_EQ(log.find("keysvc: cannot open"), std::string::npos) << log;
  std::string users = "the test's own user";
  if (const auto& user = worker_user()) {
    for (pid_t w : pids) EXPECT_EQ(process_uid(w), static_cast<long>(user->uid)) << "process " << w;
    RunResult read_pin = run(as_worker({"cat", TestToken::get().pin_path()}), "", 10s);
    EXPECT_NE(read_pin.exit_code, std::optional<int>(0)) << user->name << " can read the PIN file";
    EXPECT_EQ(read_pin.out, "");
    users = user->name + " (PIN file unreadable to it)";
  }
  const std::string sess = server.dir() + "/session.pem";
  ASSERT_TRUE(s_client_request(server.port(), TlsVersion::kTls13, ca(), "", sess).ok);
  Answer again = s_client_request(server.port(), TlsVersion::kTls13, ca(), sess, "");
  EXPECT_TRUE(again.ok && again.reused) << again.detail;
  print_figure(server.worker_noun() + " that opened the token: " + std::to_string(opened_by.size()) + " of " +
               std::to_string(workers) + ", running as " + users + "; master: 0");
  stop_and_check(server, workers);
}

void tickets_survive_a_reload(PreforkServer& server, int reload_signal, const std::string& what) {
  const std::string before = server.dir() + "/before.pem", after = server.dir() + "/after.pem";
  ASSERT_TRUE(s_client_request(server.port(), TlsVersion::kTls12, ca(), "", before).ok);
  const auto old_workers = server.worker_pids();

  ::kill(server.master_pid(), reload_signal);
  ASSERT_TRUE(server.wait_for_new_workers(old_workers, 30s)) << server.error_log();
  ASSERT_TRUE(server.wait_for_log(std::regex("keysvc: opened"), 2 * old_workers.size(), 20s)) << server.error_log();
  int resumed = 0;
  for (int i = 0; i < 4; ++i) {
    Answer a = s_client_request(server.port(), TlsVersion::kTls12, ca(), before, "");
    EXPECT_TRUE(a.ok && a.reused) << a.detail;
    EXPECT_EQ(std::count(old_workers.begin(), old_workers.end(), a.pid), 0) << "an old process answered";
    resumed += a.ok && a.reused;
  }
  ASSERT_TRUE(s_client_request(server.port(), TlsVersion::kTls13, ca(), "", after).ok);
  Answer fresh = s_client_request(server.port(), TlsVersion::kTls13, ca(), after, "");
  EXPECT_TRUE(fresh.ok && fresh.reused) << fresh.detail;
  print_figure(what + ": " + std::to_string(resumed) + "/4 TLS 1.2 tickets from before resumed on new " +
               server.worker_noun());
  stop_and_check(server, 2 * old_workers.size());  // old and new ones logged their counters
}

void s_client_resumes_across_workers(PreforkServer& server, TlsVersion v) {
  const std::size_t workers = server.worker_pids().size();
  const std::string sess = server.dir() + "/session.pem";
  Answer first = s_client_request(server.port(), v, ca(), "", sess);
  ASSERT_TRUE(first.ok) << first.detail;
  ASSERT_FALSE(first.reused);
  ASSERT_EQ(first.protocol, tls_version_name(v));
  ASSERT_FALSE(ticket_key_name(sess).empty()) << "no ticket in the session";

  std::set<pid_t> resumed_on;
  int attempts = 0, resumed = 0;
  while (attempts < 40 && (resumed_on.size() + 1 < workers || attempts < 8)) {
    ++attempts;
    Answer a = s_client_request(server.port(), v, ca(), sess, sess);
    ASSERT_TRUE(a.ok) << a.detail;
    EXPECT_TRUE(a.reused) << "attempt " << attempts << " in process " << a.pid << "\n" << a.detail;
    if (a.reused) {
      ++resumed;
      if (a.pid != first.pid) resumed_on.insert(a.pid);
    }
  }
  EXPECT_GE(resumed_on.size(), 1u) << "resumptions met no other " << server.worker_noun() << " than the issuer";
  print_figure(std::string(tls_version_name(v)) + " s_client: " + std::to_string(resumed) + "/" +
               std::to_string(attempts) + " resumed, on " + std::to_string(resumed_on.size()) + " " +
               server.worker_noun() + " other than the issuer's (" + std::to_string(workers) + " " +
               server.worker_noun() + ")");
  TicketCounters c = stop_and_check(server, workers);
  EXPECT_GE(c.resumed, static_cast<std::uint64_t>(resumed));
  EXPECT_EQ(c.hsm_error, 0u);
}

void curl_resumes_tls13_across_workers(PreforkServer& server) {
  const std::size_t workers = server.worker_pids().size();
  const TlsVersion v = TlsVersion::kTls13;
  constexpr int kRequests = 16;
  std::string detail;
  const auto answers = curl_requests(server.port(), v, ca(), kRequests, detail);
  ASSERT_EQ(answers.size(), static_cast<std::size_t>(kRequests)) << detail;
  EXPECT_FALSE(answers[0].reused) << detail;
  std::set<pid_t> met;
  int resumed = 0;
  for (int i = 1; i < kRequests; ++i) {
    EXPECT_TRUE(answers[i].reused) << "request " << i << "\n" << detail;
    EXPECT_EQ(answers[i].protocol, tls_version_name(v));
    resumed += answers[i].reused;
    met.insert(answers[i].pid);
  }
  EXPECT_GE(met.size(), 2u) << detail;
  print_figure(std::string(tls_version_name(v)) + " curl: " + std::to_string(resumed) + "/" +
               std::to_string(kRequests - 1) + " resumed, on " + std::to_string(met.size()) + " of " +
               std::to_string(workers) + " " + server.worker_noun());
  stop_and_check(server, workers);
}

void resumes_across_instances(PreforkServer& a, PreforkServer& b, TlsVersion v) {
  const std::size_t workers_a = a.worker_pids().size(), workers_b = b.worker_pids().size();
  int resumed = 0, attempts = 0;
  for (int round = 0; round < 4; ++round) {
    PreforkServer& issuer = round % 2 == 0 ? a : b;
    PreforkServer& other = round % 2 == 0 ? b : a;
    const std::string sess = issuer.dir() + "/session-" + std::to_string(round) + ".pem";
    Answer first = s_client_request(issuer.port(), v, ca(), "", sess);
    ASSERT_TRUE(first.ok) << first.detail;
    ASSERT_FALSE(first.reused);
    // There and back: the other instance resumes, then the issuer resumes the other's ticket.
    for (PreforkServer* target : {&other, &issuer}) {
      ++attempts;
      Answer r = s_client_request(target->port(), v, ca(), sess, sess);
      ASSERT_TRUE(r.ok) << r.detail;
      EXPECT_TRUE(r.reused) << "round " << round << "\n" << r.detail;
      resumed += r.reused;
    }
  }
  print_figure(std::string(tls_version_name(v)) + " across two instances: " + std::to_string(resumed) + "/" +
               std::to_string(attempts) + " resumed");
  stop_and_check(a, workers_a);
  stop_and_check(b, workers_b);
}

std::string write_rotating_toml(const std::string& file) {
  KeysvcToml t;
  t.lifetime = "8s";
  t.encrypt_period = "3s";
  t.publish_lead = "2s";
  t.decrypt_window = "8s";
  t.refresh_interval = "1s";
  // The fault scenarios count what each ticket asks of the HSM: the strict tier, where
  // every ticket is one HSM call (the epoch tier keeps opening tickets through an outage).
  t.tier = "strict";
  return write_keysvc_toml(file, t);
}

void rotation_under_load(PreforkServer& a, PreforkServer& b, const std::string& toml) {
  const std::size_t workers_a = a.worker_pids().size(), workers_b = b.worker_pids().size();
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::uint64_t rotator_runs = 0, created = 0, full = 0, resumptions = 0, failures = 0;
  std::set<std::string> key_names;
  std::vector<std::string> failure_log, rotator_errors;

  std::thread rotator([&] {
    while (!stop.load()) {
      std::string err;
      auto n = rotate(toml, err);
      std::lock_guard lock(mutex);
      ++rotator_runs;
      if (n) {
        created += *n;
      } else if (rotator_errors.size() < 3) {
        rotator_errors.push_back(err);
      }
      for (int i = 0; i < 50 && !stop.load(); ++i) std::this_thread::sleep_for(20ms);
    }
  });
  auto record = [&](bool resumed_ok, const std::string& what) {
    std::lock_guard lock(mutex);
    ++resumptions;
    if (!resumed_ok) {
      ++failures;
      if (failure_log.size() < 3) failure_log.push_back(what);
    }
  };
  const auto end = std::chrono::steady_clock::now() + 10s;
  std::thread s_client_load([&] {
    for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
      const TlsVersion v = i % 2 == 0 ? TlsVersion::kTls13 : TlsVersion::kTls12;
      PreforkServer& issuer = i % 2 == 0 ? a : b;
      PreforkServer& other = i % 2 == 0 ? b : a;
      const std::string sess = issuer.dir() + "/load-" + std::to_string(i) + ".pem";
      Answer first = s_client_request(issuer.port(), v, ca(), "", sess);
      if (!first.ok) {
        record(false, "full handshake failed: " + first.detail);
        continue;
      }
      {
        std::lock_guard lock(mutex);
        ++full;
        key_names.insert(ticket_key_name(sess));
      }
      for (PreforkServer* target : {&other, &issuer}) {
        Answer r = s_client_request(target->port(), v, ca(), sess, sess);
        record(r.ok && r.reused, r.detail);
      }
    }
  });
  std::thread curl_load([&] {
    for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
      std::string detail;
      const auto answers = curl_requests(i % 2 == 0 ? a.port() : b.port(), TlsVersion::kTls13, ca(), 6, detail);
      if (answers.size() != 6) {
        record(false, "curl: " + detail);
        continue;
      }
      {
        std::lock_guard lock(mutex);
        ++full;
      }
      for (std::size_t k = 1; k < answers.size(); ++k) record(answers[k].reused, "curl: " + detail);
    }
  });
  s_client_load.join();
  curl_load.join();
  stop = true;
  rotator.join();

  EXPECT_TRUE(rotator_errors.empty()) << rotator_errors.front();
  EXPECT_EQ(failures, 0u) << failure_log.front();
  EXPECT_GE(created, 2u) << "the rotator created too few generations to test anything";
  key_names.erase("");
  EXPECT_GE(key_names.size(), 2u) << "full handshakes met only one generation";
  EXPECT_GT(resumptions, 20u);
  print_figure("rotation under load (10 s): " + std::to_string(rotator_runs) + " rotator runs, " +
               std::to_string(created) + " generations created, " + std::to_string(key_names.size()) +
               " generations seen in s_client tickets, " + std::to_string(full) + " full handshakes, " +
               std::to_string(resumptions) + " resumptions, " + std::to_string(failures) + " failed");
  stop_and_check(a, workers_a);
  stop_and_check(b, workers_b);
}

std::string write_faultmod_toml(const std::string& file) {
  KeysvcToml t;
  t.module = FaultControl::module_path();
  t.refresh_interval = "1s";
  // The fault scenarios count what each ticket asks of the HSM: the strict tier, where
  // every ticket is one HSM call (the epoch tier keeps opening tickets through an outage).
  t.tier = "strict";
  return write_keysvc_toml(file, t);
}

FaultControl worker_faults() {
  FaultControl faults(token_subdir("faults"));
  give_to_worker(token_subdir("faults"));
  faults.export_env();
  return faults;
}

void stays_up_when_the_hsm_fails(PreforkServer& server, const FaultControl& faults) {
  const auto workers = server.worker_pids();
  const std::string before13 = server.dir() + "/before13.pem", before12 = server.dir() + "/before12.pem";
  ASSERT_TRUE(s_client_request(server.port(), TlsVersion::kTls13, ca(), "", before13).ok);
  ASSERT_TRUE(s_client_request(server.port(), TlsVersion::kTls12, ca(), "", before12).ok);

  // The HSM fails every call.
  faults.set("C_* CKR_DEVICE_ERROR\n");
  int full_during = 0, resumed_during = 0, failed_during = 0;
  for (int i = 0; i < 6; ++i) {
    for (const auto& [v, sess] : {std::pair{TlsVersion::kTls13, before13}, std::pair{TlsVersion::kTls12, before12}}) {
      Answer r = s_client_request(server.port(), v, ca(), sess, "");
      if (!r.ok) {
        ++failed_during;
        ADD_FAILURE() << "handshake failed while the HSM was down\n" << r.detail;
      } else if (r.reused) {
        ++resumed_during;
      } else {
        ++full_during;
      }
    }
  }
  EXPECT_EQ(resumed_during, 0) << "a ticket was opened without the HSM";
  EXPECT_EQ(full_during, 12);
  EXPECT_GT(faults.stats().injected, 0u);
  EXPECT_TRUE(server.running());
  EXPECT_EQ(server.worker_pids(), workers) << "a worker process died while the HSM was down";

  // The HSM is back: the tickets from before the failure resume again.
  faults.clear();
  std::string last;
  auto took13 = resume_within(server.port(), TlsVersion::kTls13, before13, 40, last);
  EXPECT_TRUE(took13) << last;
  auto took12 = resume_within(server.port(), TlsVersion::kTls12, before12, 40, last);
  EXPECT_TRUE(took12) << last;
  // And fresh tickets work end to end. Within the same bound: the worker that takes the
  // connection may be one whose breaker is still open (no client reached it since the
  // HSM came back), which issues no ticket until its next probe (hsm.breaker_backoff).
  const std::string after = server.dir() + "/after.pem";
  std::optional<int> took_fresh;
  for (int i = 1; i <= 40 && !took_fresh; ++i) {
    std::filesystem::remove(after);
    Answer full = s_client_request(server.port(), TlsVersion::kTls13, ca(), "", after);
    ASSERT_TRUE(full.ok) << full.detail;
    if (std::filesystem::exists(after)) {
      Answer again = s_client_request(server.port(), TlsVersion::kTls13, ca(), after, "");
      if (again.ok && again.reused) took_fresh = i;
      last = again.detail;
    } else {
      last = "no ticket in the full handshake";
    }
    if (!took_fresh) std::this_thread::sleep_for(250ms);
  }
  EXPECT_TRUE(took_fresh) << last;

  print_figure("HSM down (C_* CKR_DEVICE_ERROR): " + std::to_string(full_during) + " full handshakes, " +
               std::to_string(resumed_during) + " resumed, " + std::to_string(failed_during) +
               " failed; HSM back: TLS 1.3 resumed after " + (took13 ? std::to_string(*took13) : "-") +
               " attempt(s), TLS 1.2 after " + (took12 ? std::to_string(*took12) : "-") +
               ", a fresh ticket resumed after " + (took_fresh ? std::to_string(*took_fresh) : "-"));
  TicketCounters c = stop_and_check(server, workers.size());
  EXPECT_GT(c.hsm_error, 0u);
}

void turns_tickets_on_when_the_hsm_returns(PreforkServer& server, const FaultControl& faults) {
  const std::size_t workers = server.worker_pids().size();
  ASSERT_TRUE(server.wait_for_log(std::regex("keysvc: cannot open"), workers, 20s)) << server.error_log();
  // Full handshakes, and no ticket at all (never OpenSSL's own keys).
  const std::string sess = server.dir() + "/down.pem";
  Answer down = s_client_request(server.port(), TlsVersion::kTls12, ca(), "", sess);
  ASSERT_TRUE(down.ok) << down.detail;
  EXPECT_EQ(ticket_key_name(sess), "") << "a ticket was issued while keysvc could not open the token";

  faults.clear();
  ASSERT_TRUE(server.wait_for_log(std::regex("keysvc: opened"), workers, 30s)) << server.error_log();
  const std::string up = server.dir() + "/up.pem";
  ASSERT_TRUE(s_client_request(server.port(), TlsVersion::kTls13, ca(), "", up).ok);
  EXPECT_FALSE(ticket_key_name(up).empty());
  Answer r = s_client_request(server.port(), TlsVersion::kTls13, ca(), up, "");
  EXPECT_TRUE(r.ok && r.reused) << r.detail;
  const std::string log = server.error_log();
  const std::regex failed_open("keysvc: cannot open");
  print_figure("HSM down at start: " +
               std::to_string(std::distance(std::sregex_iterator(log.begin(), log.end(), failed_open),
                                            std::sregex_iterator())) +
               " failed opens (" + std::to_string(workers) + " " + server.worker_noun() + "), no ticket while down; tickets on and resumed after it returned: " +
               (r.ok && r.reused ? "yes" : "no"));
  stop_and_check(server, workers);
}

}  // namespace keysvc::test
