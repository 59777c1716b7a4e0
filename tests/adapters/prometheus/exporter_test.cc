#include "keysvc/prometheus/exporter.h"

#include <gtest/gtest.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <atomic>
#include <chrono>
#include <regex>

#include "metrics_scrape.h"
#include "process.h"

namespace keysvc::prometheus {
namespace {

using namespace std::chrono_literals;

// A Collectable with one counter that counts the collections.
class CountingCollectable : public ::prometheus::Collectable {
 public:
  std::vector<::prometheus::MetricFamily> Collect() const override {
    ::prometheus::MetricFamily f;
    f.name = "test_collections_total";
    f.help = "Collect() calls";
    f.type = ::prometheus::MetricType::Counter;
    f.metric.emplace_back();
    f.metric.back().counter.value = static_cast<double>(++collections_);
    return {f};
  }
  mutable std::atomic<int> collections_{0};
};

int port_of(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

TEST(Exporter, ServesTheCollectableOnAFreePort) {
  auto collectable = std::make_shared<CountingCollectable>();
  Exporter exporter("127.0.0.1:0", collectable);
  ASSERT_TRUE(std::regex_match(exporter.address(), std::regex(R"(127\.0\.0\.1:[1-9]\d*)"))) << exporter.address();
  const int port = port_of(exporter.address());
  EXPECT_EQ(test::sample(test::parse_exposition(test::scrape_metrics(port)), "test_collections_total"), 1);
  EXPECT_EQ(test::sample(test::parse_exposition(test::scrape_metrics(port)), "test_collections_total"), 2);

  // Only /metrics is served.
  test::RunResult other = test::run({"curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
                                     "--max-time", "10", "http://" + exporter.address() + "/"},
                                    "", 15s);
  EXPECT_EQ(other.out, "404");
}

TEST(Exporter, StopsServingWhenDestroyed) {
  int port = 0;
  {
    Exporter exporter("127.0.0.1:0", std::make_shared<CountingCollectable>());
    port = port_of(exporter.address());
  }
  EXPECT_THROW(test::scrape_metrics(port), std::runtime_error);
}

void expect_failure(const std::string& address, const std::string& why) {
  try {
    Exporter exporter(address, std::make_shared<CountingCollectable>());
    ADD_FAILURE() << "served on " << address;
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg, "cannot serve metrics on " + address + ": " + why);
  }
}

TEST(Exporter, BadAddressesFailWithOneLine) {
  expect_failure("localhost:9464", "'localhost' is not a numeric IPv4 address (names and IPv6 are not supported)");
  expect_failure("127.0.0.1:70000", "bad port '70000'");
  expect_failure("127.0.0.1:80,127.0.0.1:81",
                 "'127.0.0.1:80,127.0.0.1' is not a numeric IPv4 address (names and IPv6 are not supported)");
  // Not an address of this machine.
  expect_failure("192.0.2.1:9464", "Cannot assign requested address");
}

TEST(Exporter, BusyPortFailsWithTheReason) {
  const test::BusyPort busy;
  expect_failure(busy.address(), "Address already in use");
}

}  // namespace
}  // namespace keysvc::prometheus
