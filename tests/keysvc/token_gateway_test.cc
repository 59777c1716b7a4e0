// TokenGateway against the real SoftHSM test token: opening (module, token, PIN source),
// the two lanes, call() and module restarts on request.
#include "keysvc/token_gateway.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "keysvc/hsm/module.h"
#include "keysvc/token_store.h"
#include "test_token.h"

namespace keysvc {
namespace {

Config test_config() { return test::TestToken::get().config(); }

bool logged_in(TokenGateway& g) {
  return g.call([](hsm::Session& s) { return s.user_logged_in(); });
}

TEST(TokenGateway, TakesThePinFromTheConfigOrTheUri) {
  auto& t = test::TestToken::get();
  Config c = test_config();
  EXPECT_TRUE(logged_in(*TokenGateway::open(c)));
  c.hsm.pin_source = "";
  c.hsm.token_uri = t.token_uri() + "?pin-source=file:" + t.pin_path();
  EXPECT_TRUE(logged_in(*TokenGateway::open(c)));
  c.hsm.token_uri = t.token_uri() + "?pin-value=" + t.pin();
  EXPECT_TRUE(logged_in(*TokenGateway::open(c)));
  c.hsm.token_uri = t.token_uri();
  EXPECT_THROW(TokenGateway::open(c), ConfigError) << "no PIN source at all";
}

TEST(TokenGateway, APinGivenAtOpenReplacesTheConfigsSource) {
  auto& t = test::TestToken::get();
  Config c = test_config();
  c.hsm.pin_source = "file:/nonexistent/pin";
  EXPECT_THROW(TokenGateway::open(c), ConfigError);
  auto g = TokenGateway::open(c, hsm::PinSource::literal(hsm::SecretString::copy_of(t.pin())));
  EXPECT_TRUE(logged_in(*g));
}

TEST(TokenGateway, CallReturnsTheValueOrRethrowsWhatTheWorkThrew) {
  auto g = TokenGateway::open(test_config());
  EXPECT_EQ(g->call([](hsm::Session&) { return 42; }), 42);
  EXPECT_THROW(g->call([](hsm::Session&) -> int { throw hsm::Pkcs11Error("C_Sign", CKR_DEVICE_ERROR); }),
               hsm::Pkcs11Error);
  EXPECT_THROW(g->call([](hsm::Session&) -> int { throw std::runtime_error("x"); }), std::runtime_error);
}

TEST(TokenGateway, AMaintenanceCallThatShowsTheDeviceGoneAsksForARestart) {
  auto g = TokenGateway::open(test_config());
  int woken = 0;
  g->on_restart_requested([&] { ++woken; });
  EXPECT_THROW(g->call([](hsm::Session&) -> int { throw hsm::Pkcs11Error("C_FindObjects", CKR_DEVICE_REMOVED); }),
               hsm::Pkcs11Error);
  EXPECT_TRUE(g->module_restart_requested());
  EXPECT_EQ(woken, 1);
  // A failure that says nothing about the device asks for nothing.
  auto h = TokenGateway::open(test_config());
  EXPECT_THROW(h->call([](hsm::Session&) -> int { throw hsm::Pkcs11Error("C_Sign", CKR_KEY_HANDLE_INVALID); }),
               hsm::Pkcs11Error);
  EXPECT_FALSE(h->module_restart_requested());
}

TEST(TokenGateway, ARequestedRestartFinalizesAndInitializesTheModuleOnce) {
  auto g = TokenGateway::open(test_config());
  const auto before = g->module_generation();
  EXPECT_FALSE(g->restart_module_if_requested()) << "nothing asked";
  g->request_module_restart();
  const bool restarted = g->restart_module_if_requested();
  if (!hsm::Module::load(test_config().hsm.module)->only_user()) GTEST_SKIP() << "module shared in this process";
  EXPECT_TRUE(restarted);
  EXPECT_EQ(g->module_generation(), before + 1);
  EXPECT_EQ(g->counters().module_restarts, 1u);
  // Sessions of the old generation are dropped and a new one logs in again.
  EXPECT_TRUE(logged_in(*g));
}

TEST(TokenGateway, GoesWithoutWaitingForACallThatNeverReturns) {
  // A client library that never returns from a call (p11-kit's client can wait for ever
  // for a reply after its server died): the work below stands for that call.
  Config c = test_config();
  c.hsm.call_timeout = std::chrono::milliseconds(50);
  c.hsm.maintenance_timeout = std::chrono::milliseconds(100);
  auto g = TokenGateway::open(c);
  auto release = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = release->get_future().share();
  auto r = g->run([released](hsm::Session&) { released.wait(); }, TokenGateway::Lane::kTicket);
  EXPECT_EQ(r.outcome, TokenGateway::Outcome::kTimedOut);
  EXPECT_EQ(g->counters().guard.stuck, 1u);
  g.reset();  // returns: the stuck worker is left behind with the guard and the pool
  // The call returns at last into what was left for it, and its worker ends.
  release->set_value();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // And the token works for a new gateway.
  EXPECT_TRUE(logged_in(*TokenGateway::open(test_config())));
}

}  // namespace
}  // namespace keysvc
