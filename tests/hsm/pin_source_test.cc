#include "keysvc/hsm/pin_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "keysvc/hsm/error.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

class PinSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::TestToken::get().dir() + "/pins-" + test::random_text(8);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    ::chmod(path.c_str(), 0600);
    return path;
  }

  std::string dir_;
};

TEST_F(PinSourceTest, FileTrailingNewlineStripped) {
  EXPECT_EQ(PinSource::parse("file:" + write("a", "1234\n")).read().reveal(), "1234");
  EXPECT_EQ(PinSource::parse("file:" + write("b", "1234\r\n")).read().reveal(), "1234");
  EXPECT_EQ(PinSource::parse("file:" + write("c", "1234\n\n")).read().reveal(), "1234");
  EXPECT_EQ(PinSource::parse("file:" + write("d", "1234")).read().reveal(), "1234");
  // Only trailing line ends go: inner and leading characters are part of the PIN.
  EXPECT_EQ(PinSource::parse("file:" + write("e", " a b\tc\n")).read().reveal(), " a b\tc");
}

TEST_F(PinSourceTest, BareAbsolutePathIsAFile) {
  std::string path = write("bare", "bare-pin\n");
  PinSource p = PinSource::parse(path);
  EXPECT_EQ(p.describe(), "file:" + path);
  EXPECT_EQ(p.read().reveal(), "bare-pin");
}

TEST_F(PinSourceTest, FileIsReadAtReadTimeNotParseTime) {
  std::string path = write("late", "first\n");
  PinSource p = PinSource::parse("file:" + path);
  write("late", "second\n");
  EXPECT_EQ(p.read().reveal(), "second");
}

TEST_F(PinSourceTest, EmptyFileIsAConfigError) {
  for (const char* content : {"", "\n", "\r\n\n"}) {
    std::string path = write("empty", content);
    try {
      PinSource::parse("file:" + path).read();
      FAIL() << "empty PIN file accepted";
    } catch (const ConfigError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
    }
  }
}

TEST_F(PinSourceTest, MissingFileIsAConfigErrorNamingIt) {
  std::string path = dir_ + "/does-not-exist";
  PinSource p = PinSource::parse("file:" + path);
  try {
    p.read();
    FAIL() << "missing PIN file accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(PinSource, EnvVariable) {
  ::setenv("KEYSVC_TEST_PIN_VAR", "env-pin-42\n", 1);
  PinSource p = PinSource::parse("env:KEYSVC_TEST_PIN_VAR");
  EXPECT_EQ(p.describe(), "env:KEYSVC_TEST_PIN_VAR");
  EXPECT_EQ(p.read().reveal(), "env-pin-42");
  ::setenv("KEYSVC_TEST_PIN_VAR", "changed", 1);
  EXPECT_EQ(p.read().reveal(), "changed");
}

TEST(PinSource, MissingOrEmptyEnvVariableIsAConfigError) {
  ::unsetenv("KEYSVC_TEST_NO_SUCH_VAR");
  try {
    PinSource::parse("env:KEYSVC_TEST_NO_SUCH_VAR").read();
    FAIL() << "unset variable accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("KEYSVC_TEST_NO_SUCH_VAR"), std::string::npos) << e.what();
  }
  ::setenv("KEYSVC_TEST_EMPTY_VAR", "", 1);
  try {
    PinSource::parse("env:KEYSVC_TEST_EMPTY_VAR").read();
    FAIL() << "empty variable accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
  }
}

// A bad spec may be the PIN itself, pasted in the wrong place: never echo it.
TEST(PinSource, BadSpecIsAConfigErrorThatDoesNotEchoIt) {
  for (const char* spec : {"Sup3rS3cretPin", "pin:Sup3rS3cretPin", "relative/Sup3rS3cretPin",
                           "FILE:/Sup3rS3cretPin", "Sup3rS3cretPin:file", ""}) {
    try {
      PinSource::parse(spec);
      FAIL() << "accepted a bad PIN source spec";
    } catch (const ConfigError& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find("Sup3rS3cretPin"), std::string::npos) << msg;
      EXPECT_NE(msg.find("file:PATH"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST(PinSource, SpecNamingNothingIsAConfigError) {
  EXPECT_THROW(PinSource::parse("file:"), ConfigError);
  EXPECT_THROW(PinSource::parse("env:"), ConfigError);
}

TEST(PinSource, LiteralNeverDescribesThePin) {
  PinSource p = PinSource::literal(SecretString("lit-pin-77"));
  EXPECT_EQ(p.describe(), "pin-value");
  EXPECT_EQ(p.read().reveal(), "lit-pin-77");
  // Copies share the literal and can both read it.
  PinSource copy = p;
  EXPECT_EQ(copy.read().reveal(), "lit-pin-77");
  EXPECT_THROW(PinSource::literal(SecretString("")).read(), ConfigError);
}

TEST(PinSource, TestTokenPinFileLogsIn) {
  auto& t = test::TestToken::get();
  PinSource p = PinSource::parse("file:" + t.pin_path());
  SecretString pin = p.read();
  EXPECT_EQ(pin.reveal(), t.pin());
  Session s(test::test_hsm_token(), true);
  EXPECT_NO_THROW(s.login(CKU_USER, pin));
  EXPECT_TRUE(s.user_logged_in());
}

}  // namespace
}  // namespace keysvc::hsm
