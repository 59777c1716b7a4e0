// softhsm-config/dev-token in hostile folders: someone else's folder, a folder others can
// write to, and links planted under the names of the files it writes. Nothing outside
// DIR is ever written. (Its normal use is in keysvcctl_token_test.cc, DevToken.)
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "process.h"
#include "test_token.h"

namespace {

namespace fs = std::filesystem;
using keysvc::test::read_file;

constexpr uid_t kNobody = 65534;

class DevTokenHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* root = std::getenv("KEYSVC_TEST_TMPDIR");
    std::string tmpl = std::string(root && *root ? root : "/tmp") + "/dev-token-hostile-XXXXXX";
    fs::create_directories(fs::path(tmpl).parent_path());
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    victim_ = base_ + "/victim";
    write(victim_, "precious\n");
  }
  void TearDown() override { fs::remove_all(base_); }

  static void write(const std::string& path, const std::string& text) {
    keysvc::test::run({"sh", "-c", "printf '%s' \"$0\" > \"$1\"", text, path}, "", std::chrono::seconds(10));
  }
  // dev-token DIR with its own SOFTHSM2_CONF; never the system's token folder.
  keysvc::test::RunResult dev_token(const std::string& dir) {
    (void)keysvc::test::TestToken::get();
    return keysvc::test::run({"env", "SOFTHSM2_CONF=" + dir + "/softhsm2.conf", "KEYSVC_BIN_DIR=" KEYSVC_BIN_DIR,
                              KEYSVC_SOURCE_DIR "/softhsm-config/dev-token", dir},
                             "", std::chrono::seconds(60));
  }
  // Exit 1, one "dev-token: refusing ..." line naming `what`, nothing made in `dir`.
  void expect_refused(const std::string& dir, const std::string& what) {
    auto r = dev_token(dir);
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_EQ(keysvc::test::count_lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("dev-token: refusing to use ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir + "/pin"));
    EXPECT_FALSE(fs::exists(dir + "/tokens"));
  }

  std::string base_;
  std::string victim_;
};

TEST_F(DevTokenHostile, RefusesAFolderOwnedBySomeoneElse) {
  const std::string dir = base_ + "/theirs";
  fs::create_directory(dir);
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chown(dir.c_str(), kNobody, kNobody), 0) << "the tests run as root";
  expect_refused(dir, "owned by uid 65534");
  // Also through a link to it (DIR is resolved first).
  fs::create_directory_symlink(dir, base_ + "/link");
  expect_refused(base_ + "/link", "owned by uid 65534");
}

TEST_F(DevTokenHostile, RefusesAFolderOthersCanWrite) {
  const std::string dir = base_ + "/shared";
  fs::create_directory(dir);
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  expect_refused(dir, "writable by group or others");
  ASSERT_EQ(::chmod(dir.c_str(), 0770), 0);
  expect_refused(dir, "writable by group or others");
}

// A folder above DIR that others can write to lets them swap DIR itself, unless it is
// sticky (/tmp): then only DIR's owner may rename it.
TEST_F(DevTokenHostile, RefusesAFolderBelowOneOthersCanWriteUnlessSticky) {
  const std::string open_parent = base_ + "/open";
  fs::create_directory(open_parent);
  ASSERT_EQ(::chmod(open_parent.c_str(), 0777), 0);
  expect_refused(open_parent + "/token", "above it is writable by group or others and not sticky");

  const std::string their_parent = base_ + "/their-parent";
  fs::create_directory(their_parent);
  ASSERT_EQ(::chown(their_parent.c_str(), kNobody, kNobody), 0);
  expect_refused(their_parent + "/token", "above it is owned by uid 65534");

  const std::string sticky = base_ + "/sticky";
  fs::create_directory(sticky);
  ASSERT_EQ(::chmod(sticky.c_str(), 01777), 0);
  auto r = dev_token(sticky + "/token");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

// Links planted in DIR under the names dev-token writes (its temporary names of old, its
// lock file of old, the files themselves) are replaced, never written through.
TEST_F(DevTokenHostile, LinksUnderItsFileNamesAreNotFollowed) {
  const std::string dir = base_ + "/token";
  fs::create_directory(dir);
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  for (const char* name : {"softhsm2.conf", "softhsm2.conf.tmp", "keysvc.toml.tmp", ".dev-token.lock", "pin",
                           "so-pin"})
    fs::create_symlink(victim_, dir + "/" + name);
  fs::create_symlink(base_ + "/made-through-link", dir + "/keysvc.toml");  // dangling

  auto r = dev_token(dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(read_file(victim_), "precious\n");
  EXPECT_FALSE(fs::exists(base_ + "/made-through-link"));
  for (const char* name : {"softhsm2.conf", "keysvc.toml", "pin", "so-pin"}) {
    EXPECT_FALSE(fs::is_symlink(dir + "/" + name)) << name;
    EXPECT_TRUE(fs::is_regular_file(dir + "/" + name)) << name;
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/pin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(read_file(dir + "/pin").size(), 33u);
}

TEST_F(DevTokenHostile, RefusesATokenFolderThatIsALink) {
  const std::string dir = base_ + "/token";
  fs::create_directory(dir);
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  fs::create_directory(base_ + "/elsewhere");
  fs::create_directory_symlink(base_ + "/elsewhere", dir + "/tokens");
  auto r = dev_token(dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tokens is a symbolic link"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(base_ + "/elsewhere"));
}

}  // namespace
