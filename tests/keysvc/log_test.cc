#include "keysvc/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

namespace keysvc {
namespace {

TEST(Log, OneNamedLoggerForTheProcess) {
  auto a = logger();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name(), "keysvc");
  EXPECT_EQ(logger().get(), a.get());
  EXPECT_EQ(spdlog::get("keysvc").get(), a.get()) << "registered, so other code can find it";
}

TEST(Log, SetLevelByName) {
  set_log_level("warn");
  EXPECT_EQ(logger()->level(), spdlog::level::warn);
  set_log_level("trace");
  EXPECT_EQ(logger()->level(), spdlog::level::trace);
  set_log_level("off");
  EXPECT_EQ(logger()->level(), spdlog::level::off);
  set_log_level("error");
  EXPECT_EQ(logger()->level(), spdlog::level::err);
  set_log_level("info");
  EXPECT_EQ(logger()->level(), spdlog::level::info);
}

TEST(Log, LevelFiltersMessages) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  logger()->sinks().push_back(sink);
  set_log_level("warn");
  logger()->info("hidden-info-line");
  logger()->warn("shown-warn-line");
  logger()->flush();
  logger()->sinks().pop_back();
  EXPECT_EQ(out.str().find("hidden-info-line"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("shown-warn-line"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace keysvc
