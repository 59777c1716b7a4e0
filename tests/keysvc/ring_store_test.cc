// The ring store against the real SoftHSM test token seen through keysvc-faultmod: scans
// install newer rings and tell the listeners; a failed scan and a scan that lost every
// generation keep the last good ring without telling anyone; concurrent scans never
// install an older ring over a newer one while a rotator in another process adds
// generations.
#include "keysvc/ring_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>

#include "fault_control.h"
#include "process.h"
#include "keysvc/token_store.h"
#include "test_token.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;

test::FaultControl& faults() {
  static test::FaultControl* control = [] {
    auto* c = new test::FaultControl(test::TestToken::get().dir() + "/ring-store-faults");
    c->export_env();
    return c;
  }();
  return *control;
}

class RingStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    faults().clear();
    test::TestToken::get().clear();
    Config c = test::TestToken::get().config();
    c.hsm.module = test::FaultControl::module_path();
    gateway_ = TokenGateway::open(c);
    store_ = std::make_unique<RingStore>(*gateway_, [this] { return now_.load(); }, 30, nullptr);
    store_->listen([this](const KeyRing& before, const KeyRing& after, std::int64_t) {
      ++heard_;
      last_before_ = before.generations().size();
      last_after_ = after.generations().size();
    });
  }
  void TearDown() override { faults().clear(); }

  Generation create() {
    const std::int64_t now = now_;
    return gateway_->call([now](hsm::Session& s) {
      return token_store::create_generation(s, Schedule{now, now, now + 3600, now + 7200});
    });
  }
  void set(const std::string& rules) {
    faults().set(rules);
    std::this_thread::sleep_for(10ms);  // the module looks at the file every 2 ms
  }

  std::atomic<std::int64_t> now_{1'800'000'000};
  std::unique_ptr<TokenGateway> gateway_;
  std::unique_ptr<RingStore> store_;
  std::atomic<int> heard_{0};
  std::size_t last_before_ = 0, last_after_ = 0;
};

TEST_F(RingStoreTest, AScanInstallsTheTokensRingAndTellsTheListeners) {
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kInstalled);
  EXPECT_TRUE(store_->current()->empty());
  create();
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kInstalled);
  EXPECT_EQ(store_->current()->generations().size(), 1u);
  EXPECT_EQ(heard_, 2);
  EXPECT_EQ(last_before_, 0u);
  EXPECT_EQ(last_after_, 1u);
  EXPECT_FALSE(store_->stale());
  EXPECT_EQ(store_->counters().installed, 2u);
}

TEST_F(RingStoreTest, AFailedScanKeepsTheLastGoodRingAndTellsNobody) {
  create();
  ASSERT_EQ(store_->scan(), RingStore::ScanResult::kInstalled);
  set("C_FindObjectsInit CKR_DEVICE_ERROR\n");
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kFailed);
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kFailed);
  EXPECT_EQ(store_->current()->generations().size(), 1u);
  EXPECT_TRUE(store_->stale());
  EXPECT_EQ(heard_, 1);
  EXPECT_EQ(store_->counters().failed, 2u);
  set("");
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kInstalled);
  EXPECT_FALSE(store_->stale());
}

TEST_F(RingStoreTest, AScanThatLostEveryGenerationIsTakenForAnOutage) {
  create();
  create();
  ASSERT_EQ(store_->scan(), RingStore::ScanResult::kInstalled);
  test::TestToken::get().clear();  // every generation gone at once
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kSuspect);
  EXPECT_EQ(store_->current()->generations().size(), 2u) << "the last good ring is kept";
  EXPECT_EQ(heard_, 1) << "listeners (the audit trail) never hear of it";
  EXPECT_TRUE(store_->stale());
  EXPECT_EQ(store_->counters().suspect, 1u);
  create();  // the token is readable again: a new generation shows it
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kInstalled);
  EXPECT_EQ(store_->current()->generations().size(), 1u);
  EXPECT_FALSE(store_->stale());
}

// One generation made as an operator's rotator makes it: `keysvcctl keys generate`, in
// a process of its own. Not in this process: SoftHSM 2.6 keeps one object cache per
// process and guards its object files with fcntl locks, which do not exclude threads of
// one process, so a search here that reads a new object's file while another thread
// here writes it can find the file empty and mark the object invalid for good in this
// process (ObjectFile::refresh); the ring would then lack that generation until the
// module is loaded again. A reader in another process reads the file again on its next
// refresh.
void generate_in_another_process() {
  const test::RunResult r = test::run(
      {KEYSVCCTL_BIN, "--config", test::TestToken::get().config_path(), "keys", "generate"}, "", 60s);
  if (r.exit_code != std::optional<int>(0))
    throw std::runtime_error("keysvcctl keys generate failed: " + r.err + r.out);
}

TEST_F(RingStoreTest, ConcurrentScansNeverInstallAnOlderRingOverANewerOne) {
  // Generations are only ever added here, so every installed ring must hold at least as
  // many as the one installed before it.
  now_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::atomic<int> regressions{0};
  store_->listen([&](const KeyRing& before, const KeyRing& after, std::int64_t) {
    if (after.generations().size() < before.generations().size()) ++regressions;
  });
  std::atomic<bool> stop{false};
  std::vector<std::thread> scanners;
  for (int t = 0; t < 4; ++t)
    scanners.emplace_back([&] {
      while (!stop) store_->scan();
    });
  int created = 0;
  std::string error;
  try {
    for (; created < 12; ++created) generate_in_another_process();
  } catch (const std::exception& e) {
    error = e.what();
  }
  stop = true;
  for (auto& t : scanners) t.join();
  ASSERT_EQ(created, 12) << error;
  EXPECT_EQ(store_->scan(), RingStore::ScanResult::kInstalled);
  EXPECT_EQ(store_->current()->generations().size(), 12u);
  EXPECT_EQ(regressions, 0);
  EXPECT_GT(store_->counters().installed, 12u);
}

TEST_F(RingStoreTest, WaitForScanReturnsOnceALaterScanFinished) {
  const auto seen = store_->scans_finished();
  EXPECT_FALSE(store_->wait_for_scan(seen, std::chrono::steady_clock::now() + 10ms));
  std::thread t([&] { store_->scan(); });
  EXPECT_TRUE(store_->wait_for_scan(seen, std::chrono::steady_clock::now() + 10s));
  t.join();
}

}  // namespace
}  // namespace keysvc
